// Times each peer_native kernel on the target PEER configuration: N = 1024² experts, d = 256, 8 heads x top-16
// (m = 128 slots per token), key dim 128, T = 2048 tokens. Prints the median of 5 runs (after one warm-up).
// Usage: peer_native_bench [threads]   (0 or absent = all CPUs). Needs about 5 GB of memory.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "peer_native.h"

namespace {

constexpr int64_t kSide = 1024, kExperts = kSide * kSide, kDim = 256, kHeads = 8, kTopK = 16;
constexpr int64_t kSlots = kHeads * kTopK, kKeyDim = 128, kTokens = 2048, kRows = kTokens * kHeads;

uint64_t rng_state = 0x2545F4914F6CDD1Dull;
inline uint64_t next_random() {  // xorshift64: fast enough to fill 2 GB of tables
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}
void fill(std::vector<float>& v, float scale) {
  for (auto& e : v) e = (static_cast<float>(next_random() >> 40) * 0x1p-23f - 1.0f) * scale;
}

void check(int status, const char* call) {
  if (status != PEER_OK) {
    std::fprintf(stderr, "%s failed (%d): %s\n", call, status, peer_last_error());
    std::exit(1);
  }
}

// Median and minimum of 5 timed runs in milliseconds, after one untimed warm-up.
std::pair<double, double> time_ms(const std::function<void()>& body) {
  body();
  std::vector<double> ms;
  for (int i = 0; i < 5; ++i) {
    const auto start = std::chrono::steady_clock::now();
    body();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return {ms[2], ms[0]};
}

void report(const char* name, std::pair<double, double> ms, double bytes = 0, const char* what = "") {
  std::printf("%-26s median %8.2f ms  (min %8.2f)", name, ms.first, ms.second);
  if (bytes > 0) std::printf("  %6.1f GB/s %s", bytes / (ms.first * 1e-3) / 1e9, what);
  std::printf("\n");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 0;
  peer_set_num_threads(threads);
  std::printf(
      "peer_native_bench: N=%lld d=%lld heads=%lld k=%lld m=%lld key_dim=%lld T=%lld rows=%lld, threads=%s (%u CPUs)\n",
      (long long)kExperts, (long long)kDim, (long long)kHeads, (long long)kTopK, (long long)kSlots, (long long)kKeyDim,
      (long long)kTokens, (long long)kRows, threads > 0 ? argv[1] : "all", std::thread::hardware_concurrency());

  // Retrieval.
  std::vector<float> queries(kRows * kKeyDim), sub_keys(2 * kSide * (kKeyDim / 2));
  fill(queries, 1.0f);
  fill(sub_keys, 0.125f);
  std::vector<float> top_scores(kRows * kTopK);
  std::vector<int64_t> top_indices(kRows * kTopK);
  report("product_key_topk", time_ms([&] {
           check(peer_product_key_topk_f32(queries.data(), sub_keys.data(), kRows, kSide, kKeyDim, kTopK,
                                           top_scores.data(), top_indices.data()),
                 "peer_product_key_topk_f32");
         }));
  std::vector<float> s1(kRows * kSide), s2(kRows * kSide);
  fill(s1, 4.0f);
  fill(s2, 4.0f);
  report(
      "cartesian_topk", time_ms([&] {
        check(peer_cartesian_topk_f32(s1.data(), s2.data(), kRows, kSide, kTopK, top_scores.data(), top_indices.data()),
              "peer_cartesian_topk_f32");
      }));
  s1 = {};
  s2 = {};

  // Experts: random expert indices, like retrieval over random keys.
  std::vector<float> U(kExperts * kDim), V(kExperts * kDim), x(kTokens * kDim), gates(kTokens * kSlots),
      dy(kTokens * kDim);
  fill(U, 0.0625f);
  fill(V, 0.0625f);
  // As the .NET layer does for its tables (PEER_BENCH_HUGEPAGES=0 leaves them in 4 KiB pages, for comparison).
  const char* huge_setting = std::getenv("PEER_BENCH_HUGEPAGES");
  const bool huge = !(huge_setting && std::strcmp(huge_setting, "0") == 0);
  int64_t advised = 0, advised_v = 0;
  if (huge) {
    check(peer_advise_hugepages(U.data(), kExperts * kDim * 4, &advised), "peer_advise_hugepages");
    check(peer_advise_hugepages(V.data(), kExperts * kDim * 4, &advised_v), "peer_advise_hugepages");
  }
  std::printf("expert tables: %s (%.2f GB advised)\n", huge ? "huge-page advice" : "no huge-page advice",
              (advised + advised_v) / 1e9);
  fill(x, 1.0f);
  fill(gates, 1.0f);
  fill(dy, 1.0f);
  std::vector<int64_t> indices(kTokens * kSlots);
  for (auto& e : indices) e = static_cast<int64_t>(next_random() % kExperts);
  std::vector<float> y(kTokens * kDim), hidden(kTokens * kSlots);
  const double row_bytes = double(kTokens) * kSlots * 2 * kDim * sizeof(float);
  for (int activation : {0, 1}) {
    report(activation == 0 ? "expert_forward (GELU)" : "expert_forward (ReLU)", time_ms([&] {
             check(peer_expert_forward_f32(x.data(), gates.data(), indices.data(), U.data(), V.data(), kTokens, kSlots,
                                           kDim, kExperts, activation, y.data(), hidden.data()),
                   "peer_expert_forward_f32");
           }),
           row_bytes, "of expert rows (T*m*2*d*4 bytes)");
  }

  std::vector<int64_t> unique = indices;
  std::sort(unique.begin(), unique.end());
  unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
  const int64_t unique_count = static_cast<int64_t>(unique.size());
  std::vector<int64_t> slot_to_row(indices.size());
  for (size_t s = 0; s < indices.size(); ++s)
    slot_to_row[s] = std::lower_bound(unique.begin(), unique.end(), indices[s]) - unique.begin();
  std::vector<float> dx(kTokens * kDim), dgates(kTokens * kSlots), du(unique_count * kDim), dv(unique_count * kDim);
  report("expert_backward (GELU)", time_ms([&] {
           check(peer_expert_backward_f32(x.data(), gates.data(), indices.data(), U.data(), V.data(), hidden.data(),
                                          dy.data(), slot_to_row.data(), unique_count, kTokens, kSlots, kDim, kExperts,
                                          0, dx.data(), dgates.data(), du.data(), dv.data()),
                 "peer_expert_backward_f32");
         }),
         row_bytes, "of expert rows (T*m*2*d*4 bytes)");
  std::printf("  (unique experts in the batch: %lld of %lld slots)\n", (long long)unique_count,
              (long long)(kTokens * kSlots));

  // The same kernels over bf16 tables holding the same values (0.0625 is exact in bf16): half the bytes per row.
  {
    std::vector<uint16_t> U16(kExperts * kDim), V16(kExperts * kDim);
    for (size_t i = 0; i < U16.size(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, &U[i], sizeof bits);
      U16[i] = static_cast<uint16_t>(bits >> 16);
      std::memcpy(&bits, &V[i], sizeof bits);
      V16[i] = static_cast<uint16_t>(bits >> 16);
    }
    if (huge) {
      check(peer_advise_hugepages(U16.data(), kExperts * kDim * 2, nullptr), "peer_advise_hugepages");
      check(peer_advise_hugepages(V16.data(), kExperts * kDim * 2, nullptr), "peer_advise_hugepages");
    }
    const double bf16_row_bytes = row_bytes / 2;
    report("expert_forward bf16 (GELU)", time_ms([&] {
             check(peer_expert_forward_bf16(x.data(), gates.data(), indices.data(), U16.data(), V16.data(), kTokens,
                                            kSlots, kDim, kExperts, 0, y.data(), hidden.data()),
                   "peer_expert_forward_bf16");
           }),
           bf16_row_bytes, "of expert rows (T*m*2*d*2 bytes)");
    report("expert_backward bf16 (GELU)", time_ms([&] {
             check(peer_expert_backward_bf16(x.data(), gates.data(), indices.data(), U16.data(), V16.data(),
                                             hidden.data(), dy.data(), slot_to_row.data(), unique_count, kTokens,
                                             kSlots, kDim, kExperts, 0, dx.data(), dgates.data(), du.data(), dv.data()),
                   "peer_expert_backward_bf16");
           }),
           bf16_row_bytes, "of expert rows (T*m*2*d*2 bytes)");
  }

  // Sparse AdamW on U with the backward's rows; state touched up front so page faults are not timed.
  std::vector<float> exp_avg(kExperts * kDim), exp_avg_sq(kExperts * kDim);
  std::memset(exp_avg.data(), 0, exp_avg.size() * sizeof(float));
  std::memset(exp_avg_sq.data(), 0, exp_avg_sq.size() * sizeof(float));
  if (huge) {
    check(peer_advise_hugepages(exp_avg.data(), kExperts * kDim * 4, nullptr), "peer_advise_hugepages");
    check(peer_advise_hugepages(exp_avg_sq.data(), kExperts * kDim * 4, nullptr), "peer_advise_hugepages");
  }
  std::vector<int64_t> row_steps(kExperts, 0);
  const double adam_bytes = double(unique_count) * kDim * sizeof(float) * 7;  // p, m, v read+write, grad read
  const auto adam_ms = time_ms([&] {
    check(peer_sparse_adamw_f32(U.data(), exp_avg.data(), exp_avg_sq.data(), row_steps.data(), kExperts, kDim,
                                unique.data(), du.data(), unique_count, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 1.0f),
          "peer_sparse_adamw_f32");
  });
  report("sparse_adamw", adam_ms, adam_bytes, "(rows x d x 4 B x 7 streams)");

  // The same step on bf16 copies of the table and moments (stochastic rounding), same rows and gradients.
  {
    std::vector<uint16_t> U16(kExperts * kDim), m16(kExperts * kDim), v16(kExperts * kDim);
    auto narrow = [](const std::vector<float>& from, std::vector<uint16_t>& to) {
      for (size_t i = 0; i < from.size(); ++i) {
        uint32_t bits;
        std::memcpy(&bits, &from[i], sizeof bits);
        to[i] = static_cast<uint16_t>(bits >> 16);
      }
    };
    narrow(U, U16);
    narrow(exp_avg, m16);
    narrow(exp_avg_sq, v16);
    if (huge)
      for (auto* table : {&U16, &m16, &v16})
        check(peer_advise_hugepages(table->data(), kExperts * kDim * 2, nullptr), "peer_advise_hugepages");
    std::vector<int64_t> row_steps16(kExperts, 0);
    uint64_t seed = 0;
    const auto adam16_ms = time_ms([&] {
      check(peer_sparse_adamw_bf16(U16.data(), m16.data(), v16.data(), row_steps16.data(), kExperts, kDim,
                                   unique.data(), du.data(), unique_count, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 1.0f,
                                   ++seed),
            "peer_sparse_adamw_bf16");
    });
    const double adam16_bytes = double(unique_count) * kDim * (2.0 * 6 + sizeof(float));  // grad still fp32
    report("sparse_adamw bf16", adam16_ms, adam16_bytes, "(rows x d x (6 x 2 B + 4 B))");
    std::printf("  (bf16 / fp32 AdamW step: %.2f of the time, median)\n", adam16_ms.first / adam_ms.first);
  }
  return 0;
}
