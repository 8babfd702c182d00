// Checks the peer_native CPU kernels through their C ABI against the references in kernel_test_vectors.h.
// Usage: peer_native_tests [runtime|retrieval|experts|optimizer|optimizer_bf16|validation|determinism]... (none = all);
// CTest runs one family per entry. Exit status 0 when every check passed.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "kernel_test_vectors.h"
#include "peer_native.h"

namespace {

using namespace peer_test;

int failures = 0;
int checks = 0;

void expect(bool ok, const std::string& what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

void expect_pass(const std::string& error) { expect(error.empty(), error); }

void expect_ok(int status, const std::string& call) {
  expect(status == PEER_OK, call + " returned " + std::to_string(status) + ": " + peer_last_error());
}

// ---------------------------------------------------------------------------------------------------------------

void test_runtime() {
  expect(peer_abi_version() == 3, "peer_abi_version() == 3");
  expect(std::strcmp(peer_last_error(), "") == 0, "peer_last_error() is empty before any failure");

  expect(peer_cartesian_topk_f32(nullptr, nullptr, 1, 1, 1, nullptr, nullptr) == PEER_INVALID_ARGUMENT,
         "a failing call returns PEER_INVALID_ARGUMENT");
  const std::string message = peer_last_error();
  expect(message.find("peer_cartesian_topk_f32") != std::string::npos, "message names the function: " + message);

  float s[2] = {1, 2}, out = 0;
  int64_t index = -1;
  expect_ok(peer_cartesian_topk_f32(s, s, 1, 2, 1, &out, &index), "cartesian 1x2");
  expect(message == peer_last_error(), "a successful call leaves the last failure's message");

  std::string other_thread;
  std::thread([&] {
    other_thread = peer_last_error();
    peer_product_key_topk_f32(nullptr, nullptr, 1, 1, 2, 1, nullptr, nullptr);
  }).join();
  expect(other_thread.empty(), "peer_last_error() is per thread (fresh thread sees \"\")");
  expect(message == peer_last_error(), "another thread's failure leaves this thread's message");

  float both[2];
  int64_t both_indices[2];
  for (int threads : {1, 3, 0, -4, 100000}) {
    peer_set_num_threads(threads);
    expect_ok(peer_cartesian_topk_f32(s, s, 1, 2, 2, both, both_indices),
              "cartesian with threads = " + std::to_string(threads));
    expect(both_indices[0] == 3 && both_indices[1] == 1 && both[0] == 4.0f, "top 2 of [1,2]+[1,2] is keys 3, 1");
  }
  peer_set_num_threads(0);
}

// ---------------------------------------------------------------------------------------------------------------

void test_retrieval() {
  for (const ProductKeyCase& c : product_key_cases()) {
    std::vector<float> scores(static_cast<size_t>(c.rows * c.k), std::numeric_limits<float>::quiet_NaN());
    std::vector<int64_t> indices(static_cast<size_t>(c.rows * c.k), -1);
    expect_ok(peer_product_key_topk_f32(c.queries.data(), c.sub_keys.data(), c.rows, c.n, c.key_dim, c.k, scores.data(),
                                        indices.data()),
              "product_key " + c.name);
    expect_pass(check_topk(c, scores.data(), indices.data()));

    // The same case through the cartesian entry point, from sub-key scores rounded to float.
    const int64_t h = c.key_dim / 2;
    std::vector<float> s1(static_cast<size_t>(c.rows * c.n)), s2(s1.size());
    for (int64_t r = 0; r < c.rows; ++r)
      for (int64_t a = 0; a < c.n; ++a) {
        double d1 = 0, d2 = 0;
        for (int64_t p = 0; p < h; ++p) {
          d1 += double(c.queries[static_cast<size_t>(r * c.key_dim + p)]) * c.sub_keys[static_cast<size_t>(a * h + p)];
          d2 += double(c.queries[static_cast<size_t>(r * c.key_dim + h + p)]) *
                c.sub_keys[static_cast<size_t>((c.n + a) * h + p)];
        }
        s1[static_cast<size_t>(r * c.n + a)] = static_cast<float>(d1);
        s2[static_cast<size_t>(r * c.n + a)] = static_cast<float>(d2);
      }
    expect_ok(peer_cartesian_topk_f32(s1.data(), s2.data(), c.rows, c.n, c.k, scores.data(), indices.data()),
              "cartesian from " + c.name);
    expect_pass(check_topk(c, scores.data(), indices.data()));
  }

  for (const CartesianCase& c : cartesian_cases()) {
    std::vector<float> scores(static_cast<size_t>(c.rows * c.k));
    std::vector<int64_t> indices(static_cast<size_t>(c.rows * c.k));
    expect_ok(peer_cartesian_topk_f32(c.s1.data(), c.s2.data(), c.rows, c.n, c.k, scores.data(), indices.data()),
              "cartesian " + c.name);
    expect_pass(check_topk(c, scores.data(), indices.data()));
  }
}

// ---------------------------------------------------------------------------------------------------------------

void test_experts() {
  for (const ExpertCase& c : expert_cases()) {
    std::vector<float> y(static_cast<size_t>(c.T * c.d), -7.0f), hidden(static_cast<size_t>(c.T * c.m), -7.0f);
    expect_ok(peer_expert_forward_f32(c.x.data(), c.gates.data(), c.indices.data(), c.U.data(), c.V.data(), c.T, c.m,
                                      c.d, c.N, c.activation, y.data(), hidden.data()),
              "expert_forward " + c.name);
    expect_pass(check_expert_forward(c, y.data(), hidden.data()));

    // Outputs start as garbage: the kernel must overwrite, not accumulate.
    std::vector<float> dx(static_cast<size_t>(c.T * c.d), 3.0f), dgates(static_cast<size_t>(c.T * c.m), 3.0f);
    std::vector<float> du(static_cast<size_t>(c.unique_count * c.d), 3.0f), dv(du.size(), 3.0f);
    expect_ok(peer_expert_backward_f32(c.x.data(), c.gates.data(), c.indices.data(), c.U.data(), c.V.data(),
                                       c.hidden_in.data(), c.dy.data(), c.slot_to_row.data(), c.unique_count, c.T, c.m,
                                       c.d, c.N, c.activation, dx.data(), dgates.data(), du.data(), dv.data()),
              "expert_backward " + c.name);
    expect_pass(check_expert_backward(c, dx.data(), dgates.data(), du.data(), dv.data()));
  }
}

void expect_invalid(const char* function, const std::string& needle, const std::function<int()>& call);

// Rounds to the nearest bfloat16, ties to even (what torch's .to(bfloat16) does for finite values).
uint16_t to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

float from_bf16(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// bf16 tables: on every expert case, the bf16 kernels equal the fp32 kernels run on the same tables widened to fp32,
// bit for bit (the fp32 kernels are checked against the double-precision references above).
void test_experts_bf16() {
  for (const ExpertCase& c : expert_cases()) {
    std::vector<uint16_t> u16(c.U.size()), v16(c.V.size());
    std::vector<float> uw(c.U.size()), vw(c.V.size());
    for (size_t i = 0; i < c.U.size(); ++i) uw[i] = from_bf16(u16[i] = to_bf16(c.U[i]));
    for (size_t i = 0; i < c.V.size(); ++i) vw[i] = from_bf16(v16[i] = to_bf16(c.V[i]));
    const size_t td = static_cast<size_t>(c.T * c.d), tm = static_cast<size_t>(c.T * c.m);
    std::vector<float> y32(td), h32(tm), y16(td, -7.0f), h16(tm, -7.0f);
    expect_ok(peer_expert_forward_f32(c.x.data(), c.gates.data(), c.indices.data(), uw.data(), vw.data(), c.T, c.m, c.d,
                                      c.N, c.activation, y32.data(), h32.data()),
              "expert_forward (widened bf16 tables) " + c.name);
    expect_ok(peer_expert_forward_bf16(c.x.data(), c.gates.data(), c.indices.data(), u16.data(), v16.data(), c.T, c.m,
                                       c.d, c.N, c.activation, y16.data(), h16.data()),
              "expert_forward_bf16 " + c.name);
    expect_pass(same_bits(y32, y16) && same_bits(h32, h16) ? "" : "bf16 forward differs from fp32 on the widened tables");

    const size_t ud = static_cast<size_t>(c.unique_count * c.d);
    std::vector<float> dx32(td), dg32(tm), du32(ud), dv32(ud), dx16(td, 3.0f), dg16(tm, 3.0f), du16(ud, 3.0f), dv16(ud, 3.0f);
    expect_ok(peer_expert_backward_f32(c.x.data(), c.gates.data(), c.indices.data(), uw.data(), vw.data(),
                                       c.hidden_in.data(), c.dy.data(), c.slot_to_row.data(), c.unique_count, c.T, c.m,
                                       c.d, c.N, c.activation, dx32.data(), dg32.data(), du32.data(), dv32.data()),
              "expert_backward (widened bf16 tables) " + c.name);
    expect_ok(peer_expert_backward_bf16(c.x.data(), c.gates.data(), c.indices.data(), u16.data(), v16.data(),
                                        c.hidden_in.data(), c.dy.data(), c.slot_to_row.data(), c.unique_count, c.T, c.m,
                                        c.d, c.N, c.activation, dx16.data(), dg16.data(), du16.data(), dv16.data()),
              "expert_backward_bf16 " + c.name);
    expect_pass(same_bits(dx32, dx16) && same_bits(dg32, dg16) && same_bits(du32, du16) && same_bits(dv32, dv16)
                    ? ""
                    : "bf16 backward differs from fp32 on the widened tables");
  }
  // The bf16 entry points validate like the fp32 ones and name themselves.
  const float f[1] = {0.0f};
  const int64_t i[1] = {0};
  const uint16_t b[1] = {0};
  float out[1];
  expect_invalid("peer_expert_forward_bf16", "U is null",
                 [&] { return peer_expert_forward_bf16(f, f, i, nullptr, b, 1, 1, 1, 1, 0, out, out); });
  expect_invalid("peer_expert_backward_bf16", "N must be positive, got 0",
                 [&] { return peer_expert_backward_bf16(f, f, i, b, b, f, f, i, 1, 1, 1, 1, 0, 0, out, out, out, out); });
}

// ---------------------------------------------------------------------------------------------------------------

void run_adamw(const AdamwCase& c, std::vector<float>& p, std::vector<float>& m, std::vector<float>& v,
               std::vector<int64_t>& steps) {
  p = c.param, m = c.exp_avg, v = c.exp_avg_sq, steps = c.row_steps;
  for (size_t i = 0; i < c.steps.size(); ++i) {
    const AdamwStep& s = c.steps[i];
    expect_ok(peer_sparse_adamw_f32(p.data(), m.data(), v.data(), steps.data(), c.N, c.d, s.rows.data(), s.grads.data(),
                                    static_cast<int64_t>(s.rows.size()), s.lr, s.beta1, s.beta2, s.eps, s.weight_decay,
                                    s.grad_scale),
              "sparse_adamw " + c.name + " step " + std::to_string(i));
  }
}

void test_optimizer() {
  for (const AdamwCase& c : adamw_cases()) {
    std::vector<float> p, m, v;
    std::vector<int64_t> steps;
    run_adamw(c, p, m, v, steps);
    expect_pass(check_adamw(c, p.data(), m.data(), v.data(), steps.data()));
  }
}

// ---------------------------------------------------------------------------------------------------------------

// Stochastic rounding as peer_native.h specifies it, written out independently of the library's helpers.
uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

uint16_t round_stochastic(float f, uint64_t seed, int64_t row, int64_t step, int64_t c, int which) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if (std::isnan(f)) return static_cast<uint16_t>(((bits >> 16) & 0x8000u) | 0x7FC0u);
  const uint32_t key = mix32(static_cast<uint32_t>(seed) ^
                             mix32(static_cast<uint32_t>(seed >> 32) ^
                                   mix32(static_cast<uint32_t>(row) ^ mix32(static_cast<uint32_t>(step)))));
  const uint32_t h = mix32(key ^ static_cast<uint32_t>(c));
  const uint32_t r = which == 0 ? h & 0xFFFFu : which == 1 ? h >> 16 : static_cast<uint32_t>(h * 0x9E3779B1u) >> 16;
  return static_cast<uint16_t>((bits + r) >> 16);
}

struct Bf16State {
  std::vector<uint16_t> p, m, v;
  std::vector<int64_t> steps;
  bool operator==(const Bf16State& o) const { return p == o.p && m == o.m && v == o.v && steps == o.steps; }
};

Bf16State to_bf16_state(const AdamwCase& c) {
  Bf16State s;
  for (float x : c.param) s.p.push_back(to_bf16(x));
  for (float x : c.exp_avg) s.m.push_back(to_bf16(x));
  for (float x : c.exp_avg_sq) s.v.push_back(to_bf16(x));
  s.steps = c.row_steps;
  return s;
}

void step_bf16(Bf16State& s, int64_t N, int64_t d, const AdamwStep& st, uint64_t seed, const std::string& what) {
  expect_ok(peer_sparse_adamw_bf16(s.p.data(), s.m.data(), s.v.data(), s.steps.data(), N, d, st.rows.data(),
                                   st.grads.data(), static_cast<int64_t>(st.rows.size()), st.lr, st.beta1, st.beta2,
                                   st.eps, st.weight_decay, st.grad_scale, seed),
            what);
}

// Reference step: the tables widened, one step of the fp32 kernel, then every touched element rounded as specified.
// The fp32 kernel (checked against the double reference in `optimizer`) stands in for the update formula: the library
// is built for x86-64-v3, where GCC contracts a*b+c into FMAs, so the formula compiled here without FMA differs from
// it in the last fp32 bit on some elements; the bf16 kernel must equal the fp32 one, as the bf16 expert kernels do.
void reference_step_bf16(Bf16State& s, int64_t N, int64_t d, const AdamwStep& st, uint64_t seed) {
  std::vector<float> p(s.p.size()), m(s.m.size()), v(s.v.size());
  for (size_t i = 0; i < p.size(); ++i) p[i] = from_bf16(s.p[i]), m[i] = from_bf16(s.m[i]), v[i] = from_bf16(s.v[i]);
  expect_ok(peer_sparse_adamw_f32(p.data(), m.data(), v.data(), s.steps.data(), N, d, st.rows.data(), st.grads.data(),
                                  static_cast<int64_t>(st.rows.size()), st.lr, st.beta1, st.beta2, st.eps,
                                  st.weight_decay, st.grad_scale),
            "sparse_adamw (reference for bf16)");
  for (int64_t row : st.rows)
    for (int64_t c = 0; c < d; ++c) {
      const size_t at = static_cast<size_t>(row * d + c);
      const int64_t step = s.steps[static_cast<size_t>(row)];
      s.p[at] = round_stochastic(p[at], seed, row, step, c, 0);
      s.m[at] = round_stochastic(m[at], seed, row, step, c, 1);
      s.v[at] = round_stochastic(v[at], seed, row, step, c, 2);
    }
}

Bf16State run_adamw_bf16(const AdamwCase& c, uint64_t seed) {
  Bf16State s = to_bf16_state(c);
  for (size_t i = 0; i < c.steps.size(); ++i)
    step_bf16(s, c.N, c.d, c.steps[i], seed, "sparse_adamw_bf16 " + c.name + " step " + std::to_string(i));
  return s;
}

std::string first_difference(const Bf16State& got, const Bf16State& want) {
  if (got.steps != want.steps) return "row_steps differ";
  for (const auto& t : {std::make_pair(&got.p, &want.p), std::make_pair(&got.m, &want.m),
                        std::make_pair(&got.v, &want.v)})
    for (size_t i = 0; i < t.first->size(); ++i)
      if ((*t.first)[i] != (*t.second)[i]) {
        char text[160];
        std::snprintf(text, sizeof text, "%s[%zu] = 0x%04X, expected 0x%04X",
                      t.first == &got.p ? "param" : t.first == &got.m ? "exp_avg" : "exp_avg_sq", i, (*t.first)[i],
                      (*t.second)[i]);
        return text;
      }
  return "";
}

void test_optimizer_bf16() {
  // 1. Bit for bit the reference on every AdamW case, plus rows longer than the kernel's 256-column blocks, over
  //    several chunks of rows, for any thread count.
  std::vector<AdamwCase> cases = adamw_cases();
  cases.push_back(make_adamw_case("wide_rows", 405, 300, 300, 3, 0.9f, 0.01f));
  for (const AdamwCase& c : cases)
    for (uint64_t seed : {uint64_t{0}, uint64_t{0x9E3779B97F4A7C15ull}}) {
      Bf16State want = to_bf16_state(c);
      for (const AdamwStep& st : c.steps) reference_step_bf16(want, c.N, c.d, st, seed);
      for (int threads : {1, 3, 0}) {
        peer_set_num_threads(threads);
        const std::string e = first_difference(run_adamw_bf16(c, seed), want);
        expect(e.empty(), "sparse_adamw_bf16 " + c.name + " seed " + std::to_string(seed) + " threads " +
                              std::to_string(threads) + ": " + e);
      }
    }
  peer_set_num_threads(0);

  // 2. Reproducible given the seed; another seed (in either half) draws other noise.
  const AdamwCase& wide = cases.back();
  const Bf16State a = run_adamw_bf16(wide, 42), b = run_adamw_bf16(wide, 42);
  expect(a == b, "sparse_adamw_bf16: the same seed gives the same bits");
  expect(!(a == run_adamw_bf16(wide, 43)), "sparse_adamw_bf16: seeds 42 and 43 give different bits");
  expect(!(a == run_adamw_bf16(wide, 42 + (uint64_t{1} << 32))), "sparse_adamw_bf16: seeds 42 and 42 + 2^32 differ");

  // 3. Unbiased. beta1 = beta2 = 0, eps = 0, fresh rows: m = g, v = g², and the step is exactly lr * sign(g), so
  //    param 1 moves to 1 -+ lr, strictly between two bf16 neighbours (0.7 and 0.15 of their gap above the lower one).
  //    Over 64 seeds each half of the 4096 columns gives 131072 draws, whose mean must be within 4 standard errors.
  {
    const int64_t d = 4096;
    const float lr = 0.3f * 0x1p-8f;
    const int64_t row = 0;
    std::vector<float> g(static_cast<size_t>(d));
    for (int64_t c = 0; c < d; ++c) g[static_cast<size_t>(c)] = c % 2 == 0 ? 1.0f : -1.0f;
    // The fp32 results, from the fp32 kernel.
    std::vector<float> p32(static_cast<size_t>(d), 1.0f), m32(static_cast<size_t>(d)), v32(static_cast<size_t>(d));
    int64_t step32 = 0;
    expect_ok(peer_sparse_adamw_f32(p32.data(), m32.data(), v32.data(), &step32, 1, d, &row, g.data(), 1, lr, 0.0f,
                                    0.0f, 0.0f, 0.0f, 1.0f),
              "sparse_adamw (unbiasedness fp32 values)");
    const float x[2] = {p32[0], p32[1]};  // even columns, odd columns
    expect(x[0] == 1.0f - lr && x[1] == 1.0f + lr, "fp32 step is exactly 1 -+ lr");
    uint16_t lo[2], hi[2];
    for (int k = 0; k < 2; ++k) {
      uint32_t bits;
      std::memcpy(&bits, &x[k], sizeof bits);
      lo[k] = static_cast<uint16_t>(bits >> 16), hi[k] = static_cast<uint16_t>(lo[k] + 1);
      expect(from_bf16(lo[k]) < x[k] && x[k] < from_bf16(hi[k]), "fp32 result lies strictly between bf16 neighbours");
    }
    double sum[2] = {0, 0};
    int64_t draws[2] = {0, 0}, ups[2] = {0, 0};
    bool neighbours = true, moments_exact = true;
    const int seeds = 64;
    for (int s = 0; s < seeds; ++s) {
      std::vector<uint16_t> p(static_cast<size_t>(d), to_bf16(1.0f)), m(static_cast<size_t>(d), 0),
          v(static_cast<size_t>(d), 0);
      int64_t step = 0;
      expect_ok(peer_sparse_adamw_bf16(p.data(), m.data(), v.data(), &step, 1, d, &row, g.data(), 1, lr, 0.0f, 0.0f,
                                       0.0f, 0.0f, 1.0f, 1000 + static_cast<uint64_t>(s) * 0x100000001ull),
                "sparse_adamw_bf16 (unbiasedness)");
      for (int64_t c = 0; c < d; ++c) {
        const int k = static_cast<int>(c % 2);
        const uint16_t got = p[static_cast<size_t>(c)];
        neighbours &= got == lo[k] || got == hi[k];
        ups[k] += got == hi[k];
        sum[k] += from_bf16(got);
        ++draws[k];
        moments_exact &= from_bf16(m[static_cast<size_t>(c)]) == g[static_cast<size_t>(c)] &&
                         from_bf16(v[static_cast<size_t>(c)]) == 1.0f;
      }
    }
    expect(neighbours, "every stochastically rounded result is one of the two bf16 neighbours");
    expect(moments_exact, "bf16-representable moments are stored exactly");
    for (int k = 0; k < 2; ++k) {
      const double gap = double(from_bf16(hi[k])) - from_bf16(lo[k]);
      const double q = (double(x[k]) - from_bf16(lo[k])) / gap;
      const double mean = sum[k] / double(draws[k]);
      const double standard_error = gap * std::sqrt(q * (1 - q) / double(draws[k]));
      char text[200];
      std::snprintf(text, sizeof text,
                    "unbiased rounding of %.9g: mean %.9g over %lld draws (%.4f rounded up, expected %.4f), "
                    "%.2f standard errors off",
                    double(x[k]), mean, (long long)draws[k], double(ups[k]) / double(draws[k]), q,
                    std::abs(mean - x[k]) / standard_error);
      expect(std::abs(mean - x[k]) <= 4 * standard_error, text);
    }
  }

  // 4. Validation as in the fp32 kernel, under the bf16 name; a rejected call changes nothing.
  {
    const char* aw = "peer_sparse_adamw_bf16";
    std::vector<uint16_t> p(12, to_bf16(1.0f)), m(12, 0), v(12, 0);
    std::vector<float> g(6, 1.0f);
    std::vector<int64_t> steps(4, 0), rows = {1, 3};
    const std::vector<uint16_t> p_before = p;
    auto adamw = [&](uint16_t* pp, uint16_t* mp, uint16_t* vp, int64_t* sp, const int64_t* rp, const float* gp,
                     int64_t N, int64_t d, int64_t count, float lr, float b1, float b2, float eps, float wd,
                     float scale) {
      return [=] { return peer_sparse_adamw_bf16(pp, mp, vp, sp, N, d, rp, gp, count, lr, b1, b2, eps, wd, scale, 7); };
    };
    auto ok = [&](const int64_t* rp, int64_t N, int64_t d, int64_t count, float lr, float b1, float b2, float eps,
                  float wd, float scale) {
      return adamw(p.data(), m.data(), v.data(), steps.data(), rp, g.data(), N, d, count, lr, b1, b2, eps, wd, scale);
    };
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    const int64_t* r = rows.data();
    expect_invalid(aw, "param is null", adamw(nullptr, m.data(), v.data(), steps.data(), r, g.data(), 4, 3, 2, 0.1f,
                                              0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    expect_invalid(aw, "exp_avg is null", adamw(p.data(), nullptr, v.data(), steps.data(), r, g.data(), 4, 3, 2, 0.1f,
                                                0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    expect_invalid(aw, "exp_avg_sq is null", adamw(p.data(), m.data(), nullptr, steps.data(), r, g.data(), 4, 3, 2,
                                                   0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    expect_invalid(aw, "row_steps is null", adamw(p.data(), m.data(), v.data(), nullptr, r, g.data(), 4, 3, 2, 0.1f,
                                                  0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    expect_invalid(aw, "rows is null", adamw(p.data(), m.data(), v.data(), steps.data(), nullptr, g.data(), 4, 3, 2,
                                             0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    expect_invalid(aw, "row_grads is null", adamw(p.data(), m.data(), v.data(), steps.data(), r, nullptr, 4, 3, 2,
                                                  0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    expect_invalid(aw, "N must be positive, got 0", ok(r, 0, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    expect_invalid(aw, "d must be positive, got -3", ok(r, 4, -3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    expect_invalid(aw, "count must be in [1, N = 4], got 0", ok(r, 4, 3, 0, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    expect_invalid(aw, "count must be in [1, N = 4], got 5", ok(r, 4, 3, 5, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    expect_invalid(aw, "sizes too large", ok(r, INT64_MAX / 2, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    expect_invalid(aw, "lr must be finite and >= 0, got nan", ok(r, 4, 3, 2, nan, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    expect_invalid(aw, "lr must be finite and >= 0, got -0.1", ok(r, 4, 3, 2, -0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    expect_invalid(aw, "beta1 must be in [0, 1), got 1", ok(r, 4, 3, 2, 0.1f, 1.0f, 0.99f, 1e-8f, 0.0f, 1.0f));
    expect_invalid(aw, "beta2 must be in [0, 1), got nan", ok(r, 4, 3, 2, 0.1f, 0.9f, nan, 1e-8f, 0.0f, 1.0f));
    expect_invalid(aw, "eps must be finite and >= 0, got inf", ok(r, 4, 3, 2, 0.1f, 0.9f, 0.99f, inf, 0.0f, 1.0f));
    expect_invalid(aw, "weight_decay must be finite and >= 0, got -1",
                   ok(r, 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, -1.0f, 1.0f));
    expect_invalid(aw, "grad_scale must be finite, got nan", ok(r, 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, nan));
    const std::vector<int64_t> unsorted = {3, 1}, duplicate = {2, 2}, outside = {1, 4}, negative = {-1, 2};
    expect_invalid(aw, "rows must be strictly increasing, but rows[1] = 1 follows 3",
                   ok(unsorted.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    expect_invalid(aw, "rows must be strictly increasing, but rows[1] = 2 follows 2",
                   ok(duplicate.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    expect_invalid(aw, "rows[1] = 4 is outside [0, N = 4)",
                   ok(outside.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    expect_invalid(aw, "rows[0] = -1 is outside [0, N = 4)",
                   ok(negative.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    steps[3] = -1;
    expect_invalid(aw, "row_steps[3] = -1 is invalid", ok(r, 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    steps[3] = INT64_MAX;
    expect_invalid(aw, "is invalid", ok(r, 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
    steps[3] = 0;
    expect(p == p_before && m == std::vector<uint16_t>(12, 0) && v == std::vector<uint16_t>(12, 0) &&
               steps == std::vector<int64_t>(4, 0),
           "rejected bf16 AdamW calls change nothing");
    expect_ok(ok(r, 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f)(), "sparse_adamw_bf16 after the rejected calls");
    expect(steps == std::vector<int64_t>{0, 1, 0, 1} && p[0] == p_before[0] && p[3] != p_before[3],
           "an accepted call updates only its rows");
  }

  // 5. NaN and Inf. Column kinds (c % 8) in rows of 43 (vector body and scalar tail): 0 param +Inf, 1 param -Inf,
  //    2 a negative NaN gradient with every payload bit set (a plain carry would wrap it to +0 or turn it into Inf),
  //    3 a gradient whose square overflows (v = +Inf), 4 exp_avg -Inf (param -> +Inf), 5 param a signalling bf16 NaN
  //    with the sign set, 6 exp_avg_sq landing halfway between the largest finite bf16 and Inf (beta2 = 0.5: it rounds
  //    up to Inf about half the time, as the rule implies), 7 ordinary.
  {
    const int64_t d = 43, N = 2;
    const int64_t rows[2] = {0, 1};
    Bf16State start;
    start.p.assign(static_cast<size_t>(N * d), to_bf16(0.5f));
    start.m.assign(start.p.size(), to_bf16(0.01f));
    start.v.assign(start.p.size(), to_bf16(0.001f));
    start.steps = {0, 5};
    std::vector<float> g(start.p.size(), 0.25f);
    uint32_t nan_bits = 0xFFFFFFFFu;
    float all_ones_nan;
    std::memcpy(&all_ones_nan, &nan_bits, sizeof all_ones_nan);
    for (int64_t i = 0; i < N * d; ++i) {
      const size_t at = static_cast<size_t>(i);
      switch ((i % d) % 8) {
        case 0: start.p[at] = 0x7F80; break;
        case 1: start.p[at] = 0xFF80; break;
        case 2: g[at] = all_ones_nan; break;
        case 3: g[at] = 3e38f; break;
        case 4: start.m[at] = 0xFF80; break;
        case 5: start.p[at] = 0xFF81; break;
        case 6: start.v[at] = 0x7F7F, g[at] = 1.8446e19f; break;
        default: break;
      }
    }
    const AdamwStep st{{rows[0], rows[1]}, g, 1e-3f, 0.9f, 0.5f, 1e-8f, 0.01f, 1.0f};
    bool matches = true, nan_quiet = true, inf_kept = true, near_max_ok = true;
    int64_t near_max_up = 0, near_max_draws = 0;
    std::string first;
    for (uint64_t seed = 0; seed < 200; ++seed) {
      Bf16State got = start, want = start;
      step_bf16(got, N, d, st, seed, "sparse_adamw_bf16 (NaN/Inf)");
      reference_step_bf16(want, N, d, st, seed);
      const std::string e = first_difference(got, want);
      if (!e.empty() && matches) first = "seed " + std::to_string(seed) + ": " + e;
      matches &= e.empty();
      for (int64_t i = 0; i < N * d; ++i) {
        const size_t at = static_cast<size_t>(i);
        const int64_t kind = (i % d) % 8;
        for (uint16_t x : {got.p[at], got.m[at], got.v[at]})
          if ((x & 0x7F80) == 0x7F80 && (x & 0x7F) != 0) nan_quiet &= (x & 0x7FFF) == 0x7FC0;
        if (kind == 2) nan_quiet &= got.p[at] == 0xFFC0 && got.m[at] == 0xFFC0 && got.v[at] == 0xFFC0;
        if (kind == 5) nan_quiet &= got.p[at] == 0xFFC0;
        if (kind == 0) inf_kept &= got.p[at] == 0x7F80;
        if (kind == 1) inf_kept &= got.p[at] == 0xFF80;
        if (kind == 3) inf_kept &= got.v[at] == 0x7F80;
        if (kind == 4) inf_kept &= got.m[at] == 0xFF80 && got.p[at] == 0x7F80;
        if (kind == 6) {
          near_max_ok &= got.v[at] == 0x7F7F || got.v[at] == 0x7F80;
          near_max_up += got.v[at] == 0x7F80;
          ++near_max_draws;
        }
      }
    }
    expect(matches, "sparse_adamw_bf16 with NaN/Inf equals the reference: " + first);
    expect(nan_quiet, "NaN is stored as the quiet NaN 0x7FC0 with its sign");
    expect(inf_kept, "Inf is stored as Inf");
    expect(near_max_ok && near_max_up > near_max_draws / 3 && near_max_up < 2 * near_max_draws / 3,
           "a value halfway above the largest bf16 rounds to it or to Inf, each about half the time (" +
               std::to_string(near_max_up) + " Inf of " + std::to_string(near_max_draws) + ")");
  }
}

// ---------------------------------------------------------------------------------------------------------------

// Each bad call must return PEER_INVALID_ARGUMENT with a message that names the function and contains `needle`.
void expect_invalid(const char* function, const std::string& needle, const std::function<int()>& call) {
  const int status = call();
  const std::string message = peer_last_error();
  expect(
      status == PEER_INVALID_ARGUMENT && message.find(function) != std::string::npos &&
          message.find(needle) != std::string::npos,
      std::string(function) + " [" + needle + "]: status " + std::to_string(status) + ", message \"" + message + "\"");
}

void test_validation() {
  // Retrieval: rows 2, n 3, key_dim 4, k 2.
  std::vector<float> q(8, 1.0f), keys(12, 1.0f), sc(6), s(6, 1.0f);
  std::vector<int64_t> ix(6);
  const char* pk = "peer_product_key_topk_f32";
  auto product_key = [&](const float* qp, const float* kp, int64_t rows, int64_t n, int64_t kd, int64_t k, float* os,
                         int64_t* oi) {
    return [=] { return peer_product_key_topk_f32(qp, kp, rows, n, kd, k, os, oi); };
  };
  expect_invalid(pk, "queries is null", product_key(nullptr, keys.data(), 2, 3, 4, 2, sc.data(), ix.data()));
  expect_invalid(pk, "sub_keys is null", product_key(q.data(), nullptr, 2, 3, 4, 2, sc.data(), ix.data()));
  expect_invalid(pk, "out_scores is null", product_key(q.data(), keys.data(), 2, 3, 4, 2, nullptr, ix.data()));
  expect_invalid(pk, "out_indices is null", product_key(q.data(), keys.data(), 2, 3, 4, 2, sc.data(), nullptr));
  expect_invalid(pk, "rows must be positive, got 0",
                 product_key(q.data(), keys.data(), 0, 3, 4, 2, sc.data(), ix.data()));
  expect_invalid(pk, "n must be positive, got -3",
                 product_key(q.data(), keys.data(), 2, -3, 4, 2, sc.data(), ix.data()));
  expect_invalid(pk, "key_dim must be positive and even, got 5",
                 product_key(q.data(), keys.data(), 2, 3, 5, 2, sc.data(), ix.data()));
  expect_invalid(pk, "key_dim must be positive and even, got 0",
                 product_key(q.data(), keys.data(), 2, 3, 0, 2, sc.data(), ix.data()));
  expect_invalid(pk, "k must be in [1, n = 3], got 4",
                 product_key(q.data(), keys.data(), 2, 3, 4, 4, sc.data(), ix.data()));
  expect_invalid(pk, "k must be in [1, n = 3], got 0",
                 product_key(q.data(), keys.data(), 2, 3, 4, 0, sc.data(), ix.data()));
  expect_invalid(pk, "n*n keys overflow",
                 product_key(q.data(), keys.data(), 2, int64_t(1) << 40, 4, 2, sc.data(), ix.data()));

  const char* ct = "peer_cartesian_topk_f32";
  expect_invalid(ct, "s1 is null",
                 [&] { return peer_cartesian_topk_f32(nullptr, s.data(), 2, 3, 2, sc.data(), ix.data()); });
  expect_invalid(ct, "s2 is null",
                 [&] { return peer_cartesian_topk_f32(s.data(), nullptr, 2, 3, 2, sc.data(), ix.data()); });
  expect_invalid(ct, "rows must be positive, got -1",
                 [&] { return peer_cartesian_topk_f32(s.data(), s.data(), -1, 3, 2, sc.data(), ix.data()); });
  expect_invalid(ct, "k must be in [1, n = 3], got 5",
                 [&] { return peer_cartesian_topk_f32(s.data(), s.data(), 2, 3, 5, sc.data(), ix.data()); });

  // Experts: T 2, m 3, d 4, N 5; unique rows 3.
  std::vector<float> x(8, 0.5f), gates(6, 1.0f), U(20, 0.25f), V(20, 0.5f), y(8), hidden(6), dy(8, 1.0f);
  std::vector<float> dx(8), dgates(6), du(12), dv(12);
  std::vector<int64_t> idx = {0, 1, 4, 4, 1, 0}, map = {0, 1, 2, 2, 1, 0};
  const char* fw = "peer_expert_forward_f32";
  auto forward = [&](const float* xp, const float* gp, const int64_t* ip, const float* up, const float* vp, int64_t T,
                     int64_t m, int64_t d, int64_t N, int act, float* yp, float* hp) {
    return [=] { return peer_expert_forward_f32(xp, gp, ip, up, vp, T, m, d, N, act, yp, hp); };
  };
  expect_invalid(
      fw, "x is null",
      forward(nullptr, gates.data(), idx.data(), U.data(), V.data(), 2, 3, 4, 5, 0, y.data(), hidden.data()));
  expect_invalid(fw, "gates is null",
                 forward(x.data(), nullptr, idx.data(), U.data(), V.data(), 2, 3, 4, 5, 0, y.data(), hidden.data()));
  expect_invalid(fw, "indices is null",
                 forward(x.data(), gates.data(), nullptr, U.data(), V.data(), 2, 3, 4, 5, 0, y.data(), hidden.data()));
  expect_invalid(
      fw, "U is null",
      forward(x.data(), gates.data(), idx.data(), nullptr, V.data(), 2, 3, 4, 5, 0, y.data(), hidden.data()));
  expect_invalid(
      fw, "V is null",
      forward(x.data(), gates.data(), idx.data(), U.data(), nullptr, 2, 3, 4, 5, 0, y.data(), hidden.data()));
  expect_invalid(
      fw, "y is null",
      forward(x.data(), gates.data(), idx.data(), U.data(), V.data(), 2, 3, 4, 5, 0, nullptr, hidden.data()));
  expect_invalid(fw, "hidden is null",
                 forward(x.data(), gates.data(), idx.data(), U.data(), V.data(), 2, 3, 4, 5, 0, y.data(), nullptr));
  expect_invalid(
      fw, "T must be positive, got 0",
      forward(x.data(), gates.data(), idx.data(), U.data(), V.data(), 0, 3, 4, 5, 0, y.data(), hidden.data()));
  expect_invalid(
      fw, "m must be positive, got 0",
      forward(x.data(), gates.data(), idx.data(), U.data(), V.data(), 2, 0, 4, 5, 0, y.data(), hidden.data()));
  expect_invalid(
      fw, "d must be positive, got -4",
      forward(x.data(), gates.data(), idx.data(), U.data(), V.data(), 2, 3, -4, 5, 0, y.data(), hidden.data()));
  expect_invalid(
      fw, "N must be positive, got 0",
      forward(x.data(), gates.data(), idx.data(), U.data(), V.data(), 2, 3, 4, 0, 0, y.data(), hidden.data()));
  expect_invalid(
      fw, "activation must be 0 (GELU) or 1 (ReLU), got 2",
      forward(x.data(), gates.data(), idx.data(), U.data(), V.data(), 2, 3, 4, 5, 2, y.data(), hidden.data()));
  expect_invalid(
      fw, "indices[2] = 4 is outside [0, N = 4)",
      forward(x.data(), gates.data(), idx.data(), U.data(), V.data(), 2, 3, 4, 4, 0, y.data(), hidden.data()));
  std::vector<int64_t> negative = idx;
  negative[5] = -1;
  expect_invalid(
      fw, "indices[5] = -1 is outside [0, N = 5)",
      forward(x.data(), gates.data(), negative.data(), U.data(), V.data(), 2, 3, 4, 5, 0, y.data(), hidden.data()));

  const char* bw = "peer_expert_backward_f32";
  auto backward = [&](const float* hp, const float* dyp, const int64_t* mp, const int64_t* ip, int64_t unique,
                      int64_t N, float* dxp, float* dgp, float* dup, float* dvp) {
    return [=] {
      return peer_expert_backward_f32(x.data(), gates.data(), ip, U.data(), V.data(), hp, dyp, mp, unique, 2, 3, 4, N,
                                      0, dxp, dgp, dup, dvp);
    };
  };
  expect_ok(backward(hidden.data(), dy.data(), map.data(), idx.data(), 3, 5, dx.data(), dgates.data(), du.data(),
                     dv.data())(),
            "backward with valid arguments");
  expect_invalid(
      bw, "hidden is null",
      backward(nullptr, dy.data(), map.data(), idx.data(), 3, 5, dx.data(), dgates.data(), du.data(), dv.data()));
  expect_invalid(
      bw, "dy is null",
      backward(hidden.data(), nullptr, map.data(), idx.data(), 3, 5, dx.data(), dgates.data(), du.data(), dv.data()));
  expect_invalid(
      bw, "slot_to_row is null",
      backward(hidden.data(), dy.data(), nullptr, idx.data(), 3, 5, dx.data(), dgates.data(), du.data(), dv.data()));
  expect_invalid(
      bw, "dx is null",
      backward(hidden.data(), dy.data(), map.data(), idx.data(), 3, 5, nullptr, dgates.data(), du.data(), dv.data()));
  expect_invalid(
      bw, "dgates is null",
      backward(hidden.data(), dy.data(), map.data(), idx.data(), 3, 5, dx.data(), nullptr, du.data(), dv.data()));
  expect_invalid(
      bw, "dU_rows is null",
      backward(hidden.data(), dy.data(), map.data(), idx.data(), 3, 5, dx.data(), dgates.data(), nullptr, dv.data()));
  expect_invalid(
      bw, "dV_rows is null",
      backward(hidden.data(), dy.data(), map.data(), idx.data(), 3, 5, dx.data(), dgates.data(), du.data(), nullptr));
  expect_invalid(
      bw, "unique_count must be in [1, min(N, T*m) = 5], got 0",
      backward(hidden.data(), dy.data(), map.data(), idx.data(), 0, 5, dx.data(), dgates.data(), du.data(), dv.data()));
  expect_invalid(
      bw, "unique_count must be in [1, min(N, T*m) = 5], got 6",
      backward(hidden.data(), dy.data(), map.data(), idx.data(), 6, 5, dx.data(), dgates.data(), du.data(), dv.data()));
  expect_invalid(
      bw, "slot_to_row[2] = 2 is outside [0, unique_count = 2)",
      backward(hidden.data(), dy.data(), map.data(), idx.data(), 2, 5, dx.data(), dgates.data(), du.data(), dv.data()));
  std::vector<int64_t> bad_map = map;
  bad_map[4] = -2;
  expect_invalid(bw, "slot_to_row[4] = -2 is outside",
                 backward(hidden.data(), dy.data(), bad_map.data(), idx.data(), 3, 5, dx.data(), dgates.data(),
                          du.data(), dv.data()));
  expect_invalid(bw, "indices[5] = -1 is outside",
                 backward(hidden.data(), dy.data(), map.data(), negative.data(), 3, 5, dx.data(), dgates.data(),
                          du.data(), dv.data()));

  // Sparse AdamW: N 4, d 3.
  std::vector<float> p(12, 1.0f), m(12, 0.0f), v(12, 0.0f), g(6, 1.0f);
  std::vector<int64_t> steps(4, 0), rows = {1, 3};
  const std::vector<float> p_before = p;
  const char* aw = "peer_sparse_adamw_f32";
  auto adamw = [&](float* pp, const int64_t* rp, int64_t N, int64_t d, int64_t count, float lr, float b1, float b2,
                   float eps, float wd, float scale) {
    return [=, &m, &v, &steps, &g] {
      return peer_sparse_adamw_f32(pp, m.data(), v.data(), steps.data(), N, d, rp, g.data(), count, lr, b1, b2, eps, wd,
                                   scale);
    };
  };
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  expect_invalid(aw, "param is null", adamw(nullptr, rows.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "rows is null", adamw(p.data(), nullptr, 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "exp_avg is null", [&] {
    return peer_sparse_adamw_f32(p.data(), nullptr, v.data(), steps.data(), 4, 3, rows.data(), g.data(), 2, 0.1f, 0.9f,
                                 0.99f, 1e-8f, 0.0f, 1.0f);
  });
  expect_invalid(aw, "exp_avg_sq is null", [&] {
    return peer_sparse_adamw_f32(p.data(), m.data(), nullptr, steps.data(), 4, 3, rows.data(), g.data(), 2, 0.1f, 0.9f,
                                 0.99f, 1e-8f, 0.0f, 1.0f);
  });
  expect_invalid(aw, "row_steps is null", [&] {
    return peer_sparse_adamw_f32(p.data(), m.data(), v.data(), nullptr, 4, 3, rows.data(), g.data(), 2, 0.1f, 0.9f,
                                 0.99f, 1e-8f, 0.0f, 1.0f);
  });
  expect_invalid(aw, "row_grads is null", [&] {
    return peer_sparse_adamw_f32(p.data(), m.data(), v.data(), steps.data(), 4, 3, rows.data(), nullptr, 2, 0.1f, 0.9f,
                                 0.99f, 1e-8f, 0.0f, 1.0f);
  });
  expect_invalid(aw, "N must be positive, got 0",
                 adamw(p.data(), rows.data(), 0, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "d must be positive, got 0",
                 adamw(p.data(), rows.data(), 4, 0, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "count must be in [1, N = 4], got 0",
                 adamw(p.data(), rows.data(), 4, 3, 0, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "lr must be finite and >= 0, got nan",
                 adamw(p.data(), rows.data(), 4, 3, 2, nan, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "beta1 must be in [0, 1), got 1",
                 adamw(p.data(), rows.data(), 4, 3, 2, 0.1f, 1.0f, 0.99f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "beta2 must be in [0, 1), got -0.5",
                 adamw(p.data(), rows.data(), 4, 3, 2, 0.1f, 0.9f, -0.5f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "eps must be finite and >= 0, got -1",
                 adamw(p.data(), rows.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, -1.0f, 0.0f, 1.0f));
  expect_invalid(aw, "weight_decay must be finite and >= 0, got nan",
                 adamw(p.data(), rows.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, nan, 1.0f));
  expect_invalid(aw, "grad_scale must be finite, got inf",
                 adamw(p.data(), rows.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, inf));
  const std::vector<int64_t> unsorted = {3, 1}, duplicate = {2, 2}, outside = {1, 4};
  expect_invalid(aw, "rows must be strictly increasing, but rows[1] = 1 follows 3",
                 adamw(p.data(), unsorted.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "rows must be strictly increasing, but rows[1] = 2 follows 2",
                 adamw(p.data(), duplicate.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "rows[1] = 4 is outside [0, N = 4)",
                 adamw(p.data(), outside.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  steps[3] = -1;
  expect_invalid(aw, "row_steps[3] = -1 is invalid",
                 adamw(p.data(), rows.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  steps[3] = 0;
  expect(p == p_before && steps == std::vector<int64_t>(4, 0), "rejected AdamW calls change nothing");
}

// ---------------------------------------------------------------------------------------------------------------

// Results must be bitwise identical whatever the thread count (each output is computed by one chunk in a fixed
// order); sizes are chosen so every kernel splits into several chunks.
void test_retrieval_backward() {
  // Odd sizes, repeated keys within and across rows; double-precision reference.
  for (const auto& shape : std::vector<std::array<int64_t, 4>>{{7, 5, 6, 5}, {33, 13, 10, 4}, {129, 37, 2, 1}}) {
    const int64_t rows = shape[0], n = shape[1], key_dim = shape[2], k = shape[3], h = key_dim / 2;
    Rng rng(static_cast<uint64_t>(rows * 1000 + n));
    auto q = rng.symmetric_vector(static_cast<size_t>(rows * key_dim), 1.0f);
    auto keys = rng.symmetric_vector(static_cast<size_t>(2 * n * h), 1.0f);
    auto ds = rng.symmetric_vector(static_cast<size_t>(rows * k), 1.0f);
    std::vector<int64_t> idx(static_cast<size_t>(rows * k));
    for (auto& i : idx) i = static_cast<int64_t>(rng.below(static_cast<uint64_t>(n * n)));
    std::vector<float> dq(q.size(), 123.0f), dk(keys.size(), 123.0f);
    expect_ok(peer_selected_key_backward_f32(q.data(), keys.data(), idx.data(), ds.data(), rows, n, key_dim, k, dq.data(), dk.data()),
              "peer_selected_key_backward_f32");
    std::vector<double> rq(q.size(), 0.0), rk(keys.size(), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < k; ++j) {
        const int64_t a = idx[r * k + j] / n, b = idx[r * k + j] % n;
        const double g = ds[r * k + j];
        for (int64_t p = 0; p < h; ++p) {
          rq[r * key_dim + p] += g * keys[a * h + p];
          rq[r * key_dim + h + p] += g * keys[(n + b) * h + p];
          rk[a * h + p] += g * q[r * key_dim + p];
          rk[(n + b) * h + p] += g * q[r * key_dim + h + p];
        }
      }
    double worst = 0;
    for (size_t i = 0; i < dq.size(); ++i) worst = std::max(worst, std::abs(dq[i] - rq[i]) / (1 + std::abs(rq[i])));
    for (size_t i = 0; i < dk.size(); ++i) worst = std::max(worst, std::abs(dk[i] - rk[i]) / (1 + std::abs(rk[i])));
    expect(worst < 1e-5, "selected-key backward rows=" + std::to_string(rows) + " n=" + std::to_string(n) +
                             ": max relative error " + std::to_string(worst));
  }
  int64_t bad = 25;  // n*n = 25 is out of range
  float q[2] = {1, 2}, keys[10] = {}, ds[1] = {1}, dq[2], dk[10];
  expect(peer_selected_key_backward_f32(q, keys, &bad, ds, 1, 5, 2, 1, dq, dk) == PEER_INVALID_ARGUMENT &&
             std::string(peer_last_error()).find("indices[0] = 25") != std::string::npos,
         "an out-of-range index is rejected with a message naming it");
}

void test_determinism() {
  const ProductKeyCase pk = make_product_key_case("determinism", 501, 300, 100, 64, 8);
  CartesianCase ct = make_cartesian_case("determinism", 502, 400, 60, 12);
  const ExpertCase ex = make_expert_case("determinism", 503, 600, 16, 64, 500, 0);
  const AdamwCase aw = make_adamw_case("determinism", 504, 700, 40, 2, 0.9f, 0.1f);

  struct Outputs {
    std::vector<float> pk_scores, ct_scores, y, hidden, dx, dgates, du, dv, p, m, v;
    std::vector<int64_t> pk_indices, ct_indices, steps;
    bool operator==(const Outputs& o) const {
      auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
        return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
      };
      return same(pk_scores, o.pk_scores) && same(ct_scores, o.ct_scores) && same(y, o.y) && same(hidden, o.hidden) &&
             same(dx, o.dx) && same(dgates, o.dgates) && same(du, o.du) && same(dv, o.dv) && same(p, o.p) &&
             same(m, o.m) && same(v, o.v) && pk_indices == o.pk_indices && ct_indices == o.ct_indices &&
             steps == o.steps;
    }
  };
  auto run = [&](int threads) {
    peer_set_num_threads(threads);
    Outputs o;
    o.pk_scores.resize(static_cast<size_t>(pk.rows * pk.k));
    o.pk_indices.resize(o.pk_scores.size());
    expect_ok(peer_product_key_topk_f32(pk.queries.data(), pk.sub_keys.data(), pk.rows, pk.n, pk.key_dim, pk.k,
                                        o.pk_scores.data(), o.pk_indices.data()),
              "product_key determinism");
    expect_pass(check_topk(pk, o.pk_scores.data(), o.pk_indices.data()));
    o.ct_scores.resize(static_cast<size_t>(ct.rows * ct.k));
    o.ct_indices.resize(o.ct_scores.size());
    expect_ok(peer_cartesian_topk_f32(ct.s1.data(), ct.s2.data(), ct.rows, ct.n, ct.k, o.ct_scores.data(),
                                      o.ct_indices.data()),
              "cartesian determinism");
    expect_pass(check_topk(ct, o.ct_scores.data(), o.ct_indices.data()));
    o.y.resize(static_cast<size_t>(ex.T * ex.d));
    o.hidden.resize(static_cast<size_t>(ex.T * ex.m));
    expect_ok(peer_expert_forward_f32(ex.x.data(), ex.gates.data(), ex.indices.data(), ex.U.data(), ex.V.data(), ex.T,
                                      ex.m, ex.d, ex.N, ex.activation, o.y.data(), o.hidden.data()),
              "expert_forward determinism");
    expect_pass(check_expert_forward(ex, o.y.data(), o.hidden.data()));
    o.dx.resize(o.y.size());
    o.dgates.resize(o.hidden.size());
    o.du.resize(static_cast<size_t>(ex.unique_count * ex.d));
    o.dv.resize(o.du.size());
    expect_ok(
        peer_expert_backward_f32(ex.x.data(), ex.gates.data(), ex.indices.data(), ex.U.data(), ex.V.data(),
                                 ex.hidden_in.data(), ex.dy.data(), ex.slot_to_row.data(), ex.unique_count, ex.T, ex.m,
                                 ex.d, ex.N, ex.activation, o.dx.data(), o.dgates.data(), o.du.data(), o.dv.data()),
        "expert_backward determinism");
    expect_pass(check_expert_backward(ex, o.dx.data(), o.dgates.data(), o.du.data(), o.dv.data()));
    run_adamw(aw, o.p, o.m, o.v, o.steps);
    expect_pass(check_adamw(aw, o.p.data(), o.m.data(), o.v.data(), o.steps.data()));
    return o;
  };
  const Outputs one = run(1);
  for (int threads : {2, 3, 7})
    expect(run(threads) == one, "identical results with 1 and " + std::to_string(threads) + " threads");
  peer_set_num_threads(0);
}

// ---------------------------------------------------------------------------------------------------------------

// Bytes of anonymous huge pages this process holds (/proc/self/smaps_rollup), or -1 where that is not readable.
int64_t anon_huge_bytes() {
  std::FILE* f = std::fopen("/proc/self/smaps_rollup", "r");
  if (!f) return -1;
  char line[256];
  int64_t kb = -1;
  while (std::fgets(line, sizeof(line), f))
    if (std::sscanf(line, "AnonHugePages: %lld kB", reinterpret_cast<long long*>(&kb)) == 1) break;
  std::fclose(f);
  return kb < 0 ? -1 : kb * 1024;
}

void test_memory() {
  const char* fn = "peer_advise_hugepages";
  int64_t advised = -1;
  expect_invalid(fn, "ptr is null", [&] { return peer_advise_hugepages(nullptr, 4096, &advised); });
  std::vector<char> small(4096, 7);
  expect_invalid(fn, "bytes must be non-negative, got -1", [&] { return peer_advise_hugepages(small.data(), -1, nullptr); });
  expect_invalid(fn, "wraps around the address space",
                 [&] { return peer_advise_hugepages(reinterpret_cast<void*>(UINTPTR_MAX - 4095), 8192, nullptr); });
  expect_ok(peer_advise_hugepages(nullptr, 0, &advised), "advise an empty range");
  expect(advised == 0, "an empty range advises 0 bytes");
  advised = -1;
  expect_ok(peer_advise_hugepages(small.data(), static_cast<int64_t>(small.size()), &advised), "advise 4 KiB");
  expect(advised == 0, "a range holding no whole 2 MiB page advises 0 bytes, got " + std::to_string(advised));
  expect(std::all_of(small.begin(), small.end(), [](char c) { return c == 7; }), "advice leaves 4 KiB unchanged");

  // A table-like buffer, filled before the advice as the layer's tables are: contents must survive the collapse.
  const int64_t floats = int64_t{3} << 20;  // 12 MiB: at least 5 whole huge pages at any alignment
  std::vector<float> table(static_cast<size_t>(floats));
  for (int64_t i = 0; i < floats; ++i) table[static_cast<size_t>(i)] = static_cast<float>(i % 1000003) * 0.5f;
  const int64_t huge_before = anon_huge_bytes();
  advised = -1;
  expect_ok(peer_advise_hugepages(table.data(), floats * 4, &advised), "advise a 12 MiB table");
  const int64_t huge_after = anon_huge_bytes();
  bool same = true;
  for (int64_t i = 0; i < floats; ++i) same &= table[static_cast<size_t>(i)] == static_cast<float>(i % 1000003) * 0.5f;
  expect(same, "advice and collapse leave the table's contents unchanged");
  const uintptr_t start = reinterpret_cast<uintptr_t>(table.data()), two_mib = uintptr_t{2} << 20;
  const int64_t whole = static_cast<int64_t>((((start + floats * 4) & ~(two_mib - 1)) - ((start + two_mib - 1) & ~(two_mib - 1))));
  expect(advised == 0 || advised == whole,
         "advised bytes are 0 or the whole 2 MiB pages inside the range (" + std::to_string(whole) + "), got " +
             std::to_string(advised));
#if defined(__linux__)
  std::FILE* mode = std::fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
  char text[128] = {};
  if (mode) {
    text[std::fread(text, 1, sizeof(text) - 1, mode)] = '\0';
    std::fclose(mode);
  }
  const bool thp = mode && std::strstr(text, "[never]") == nullptr;
  expect(!thp || advised == whole, "with THP allowed (" + std::string(text) + ") the whole pages are advised");
  // Collapse may fail for lack of free huge pages on a busy machine, so this is reported rather than required.
  if (thp && huge_before >= 0 && huge_after >= 0)
    std::printf("memory: AnonHugePages %lld -> %lld kB after advising %lld bytes\n", (long long)(huge_before / 1024),
                (long long)(huge_after / 1024), (long long)advised);
#else
  (void)huge_before;
  (void)huge_after;
  expect(advised == 0, "off Linux the advice is a no-op");
#endif
  advised = -1;
  expect_ok(peer_advise_hugepages(table.data(), floats * 4, &advised), "advising the same range again");
  expect_ok(peer_advise_hugepages(table.data() + 1, floats * 4 - 8, nullptr), "an unaligned range, no out-param");
}

}  // namespace

#if defined(PEER_TESTS_WITH_OPENMP)
#include <link.h>
#include <omp.h>

int count_libgomp(struct dl_phdr_info* info, size_t, void* data) {
  if (info->dlpi_name && std::strstr(info->dlpi_name, "libgomp")) ++*static_cast<int*>(data);
  return 0;
}
#endif

// unique_rows: against std::sort + std::unique on random, duplicated, single-value and boundary inputs; validation.
void test_unique_rows() {
  uint64_t state = 12345;
  auto next = [&state]() {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return state >> 17;
  };
  struct Case {
    int64_t count, N;
  };
  for (const Case c : {Case{1, 1}, Case{7, 1}, Case{100, 64}, Case{100, 65}, Case{5000, 1 << 20}, Case{4096, 300},
                       Case{262144, 1 << 20}}) {
    std::vector<int64_t> indices(static_cast<size_t>(c.count));
    for (auto& v : indices) v = static_cast<int64_t>(next() % static_cast<uint64_t>(c.N));
    if (c.count > 2) indices[1] = c.N - 1, indices[2] = 0;  // both ends of the range
    std::vector<int64_t> expected = indices;
    std::sort(expected.begin(), expected.end());
    expected.erase(std::unique(expected.begin(), expected.end()), expected.end());
    std::vector<int64_t> rows(static_cast<size_t>(c.count), -1), inverse(static_cast<size_t>(c.count), -1);
    int64_t unique_count = -1;
    const std::string name = "unique_rows count " + std::to_string(c.count) + " N " + std::to_string(c.N);
    expect_ok(peer_unique_rows(indices.data(), c.count, c.N, rows.data(), inverse.data(), &unique_count), name);
    expect(unique_count == static_cast<int64_t>(expected.size()), name + ": unique count");
    rows.resize(static_cast<size_t>(std::max<int64_t>(unique_count, 0)));
    expect(rows == expected, name + ": rows sorted and unique");
    bool mapped = true;
    for (size_t i = 0; i < indices.size(); ++i)
      mapped = mapped && inverse[i] >= 0 && inverse[i] < unique_count && expected[static_cast<size_t>(inverse[i])] == indices[i];
    expect(mapped, name + ": inverse maps every slot to its row");
  }
  int64_t idx[2] = {3, 9}, rows[2] = {-1, -1}, inverse[2] = {-1, -1}, n = -1;
  expect_invalid("peer_unique_rows", "indices[1] = 9 is outside [0, N = 9)",
                 [&] { return peer_unique_rows(idx, 2, 9, rows, inverse, &n); });
  expect(rows[0] == -1 && inverse[0] == -1 && n == -1, "a rejected unique_rows call writes nothing");
  expect_invalid("peer_unique_rows", "count must be positive, got 0",
                 [&] { return peer_unique_rows(idx, 0, 9, rows, inverse, &n); });
  expect_invalid("peer_unique_rows", "inverse is null", [&] { return peer_unique_rows(idx, 2, 10, rows, nullptr, &n); });
}

int main(int argc, char** argv) {
#if defined(PEER_TESTS_WITH_OPENMP)
  // Start the OpenMP team first, as libtorch has before any kernel runs in the .NET process.
  int team = 0;
#pragma omp parallel
  {
#pragma omp atomic
    ++team;
  }
  int loaded = 0;
  dl_iterate_phdr(count_libgomp, &loaded);
  expect(loaded > 0, "libgomp is loaded in this process (team of " + std::to_string(team) + ")");
#endif
  const std::map<std::string, void (*)()> families = {
      {"runtime", test_runtime},     {"retrieval", test_retrieval},   {"experts", test_experts},
      {"experts_bf16", test_experts_bf16},
      {"optimizer", test_optimizer}, {"optimizer_bf16", test_optimizer_bf16},
      {"unique_rows", test_unique_rows},
      {"validation", test_validation}, {"determinism", test_determinism},
      {"retrieval_backward", test_retrieval_backward}, {"memory", test_memory},
  };
  std::vector<std::string> selected(argv + 1, argv + argc);
  if (selected.empty())
    for (const auto& f : families) selected.push_back(f.first);
  if (std::find(selected.begin(), selected.end(), "runtime") != selected.end()) {
    // Runs first: it checks the state of a thread on which nothing has failed yet.
    selected.erase(std::remove(selected.begin(), selected.end(), "runtime"), selected.end());
    selected.insert(selected.begin(), "runtime");
  }
  for (const std::string& name : selected) {
    const auto family = families.find(name);
    if (family == families.end()) {
      std::printf("unknown test family '%s'\n", name.c_str());
      return 2;
    }
    const int before = failures;
    family->second();
    std::printf("%s: %s\n", name.c_str(), failures == before ? "passed" : "FAILED");
  }
  std::printf("%d checks, %d failures\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
