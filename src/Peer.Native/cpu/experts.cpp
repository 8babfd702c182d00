// Fused single-neuron experts: forward y[t] = sum_j gates * act(U[idx]·x[t]) * V[idx] and its backward, without
// gathering expert rows into temporaries. Both passes are bound by reading random U/V rows (d floats each), so each
// row is streamed once per use and the rows of a later slot are prefetched while the current one is processed.
#include <cmath>
#include <cstring>

#include "peer_internal.h"

namespace {

constexpr int kGelu = 0;
constexpr int kRelu = 1;
// Slots ahead whose rows are prefetched: covers DRAM latency for 1 KB rows (2, 4, 8 measured within noise; 4 best).
constexpr int64_t kPrefetchSlots = 4;

inline float activate(int activation, float h) {
  if (activation == kGelu) return 0.5f * h * (1.0f + std::erf(h * 0.70710678118654752f));
  return h < 0.0f ? 0.0f : h;  // keeps NaN, like torch.relu
}

inline float activate_grad(int activation, float h) {
  if (activation == kGelu)
    return 0.5f * (1.0f + std::erf(h * 0.70710678118654752f)) + h * 0.39894228040143268f * std::exp(-0.5f * h * h);
  return h > 0.0f ? 1.0f : 0.0f;
}

// y = alpha * v
inline void scale(float* __restrict y, float alpha, const float* __restrict v, int64_t d) {
  for (int64_t i = 0; i < d; ++i) y[i] = alpha * v[i];
}

template <class Row>
inline void prefetch_slot(const int64_t* indices, const Row* U, const Row* V, int64_t slot, int64_t d) {
  const int64_t e = indices[slot];
  peer::prefetch_row(U + e * d, d * static_cast<int64_t>(sizeof(Row)));
  peer::prefetch_row(V + e * d, d * static_cast<int64_t>(sizeof(Row)));
}

// Visits tokens [lo, hi) and their m slots in order, prefetching the expert rows kPrefetchSlots slots ahead (the
// rows are at random addresses, so the forward and the backward's first pass are bound by these misses).
template <class Row, class TokenStart, class SlotBody>
inline void for_each_slot(const int64_t* indices, const Row* U, const Row* V, int64_t lo, int64_t hi, int64_t m,
                          int64_t d, TokenStart&& token_start, SlotBody&& slot_body) {
  const int64_t end_slot = hi * m;
  for (int64_t s = lo * m; s < std::min(lo * m + kPrefetchSlots, end_slot); ++s) prefetch_slot(indices, U, V, s, d);
  for (int64_t t = lo; t < hi; ++t) {
    token_start(t);
    for (int64_t j = 0; j < m; ++j) {
      const int64_t s = t * m + j;
      if (s + kPrefetchSlots < end_slot) prefetch_slot(indices, U, V, s + kPrefetchSlots, d);
      slot_body(t, s, indices[s]);
    }
  }
}

// Shared checks of the forward and backward: pointers, sizes, activation and every expert index.
template <class Row>
int check_common(const char* fn, const float* x, const float* gates, const int64_t* indices, const Row* U,
                 const Row* V, int64_t T, int64_t m, int64_t d, int64_t N, int activation) {
  PEER_REQUIRE(x, "%s: x is null", fn);
  PEER_REQUIRE(gates, "%s: gates is null", fn);
  PEER_REQUIRE(indices, "%s: indices is null", fn);
  PEER_REQUIRE(U, "%s: U is null", fn);
  PEER_REQUIRE(V, "%s: V is null", fn);
  PEER_REQUIRE(T > 0, "%s: T must be positive, got %lld", fn, (long long)T);
  PEER_REQUIRE(m > 0, "%s: m must be positive, got %lld", fn, (long long)m);
  PEER_REQUIRE(d > 0, "%s: d must be positive, got %lld", fn, (long long)d);
  PEER_REQUIRE(N > 0, "%s: N must be positive, got %lld", fn, (long long)N);
  PEER_REQUIRE(activation == kGelu || activation == kRelu, "%s: activation must be 0 (GELU) or 1 (ReLU), got %d", fn,
               activation);
  int64_t size;
  PEER_REQUIRE(peer::checked_mul(T, m, &size) && peer::checked_mul(T, d, &size) && peer::checked_mul(N, d, &size),
               "%s: sizes too large (T = %lld, m = %lld, d = %lld, N = %lld)", fn, (long long)T, (long long)m,
               (long long)d, (long long)N);
  const int64_t slots = T * m;
  for (int64_t s = 0; s < slots; ++s)
    PEER_REQUIRE(indices[s] >= 0 && indices[s] < N, "%s: indices[%lld] = %lld is outside [0, N = %lld)", fn,
                 (long long)s, (long long)indices[s], (long long)N);
  return PEER_OK;
}

template <class Row>
int expert_forward(const char* fn, const float* x, const float* gates, const int64_t* indices, const Row* U, const Row* V,
                   int64_t T, int64_t m, int64_t d, int64_t N, int activation, float* y, float* hidden) {
  return peer::guarded(fn, [&]() -> int {
    PEER_REQUIRE(y, "%s: y is null", fn);
    PEER_REQUIRE(hidden, "%s: hidden is null", fn);
    if (int rc = check_common(fn, x, gates, indices, U, V, T, m, d, N, activation)) return rc;

    const int64_t grain = std::max<int64_t>(1, 4096 / m);  // tokens per chunk: a few thousand slots
    const int workers = peer::worker_count(T, grain);
    peer::parallel_for(T, grain, workers, [&](int64_t lo, int64_t hi, int) {
      for_each_slot(
          indices, U, V, lo, hi, m, d,
          [&](int64_t t) { std::memset(y + t * d, 0, sizeof(float) * static_cast<size_t>(d)); },
          [&](int64_t t, int64_t s, int64_t e) {
            const float h = peer::dot(U + e * d, x + t * d, d);
            hidden[s] = h;
            peer::axpy(y + t * d, gates[s] * activate(activation, h), V + e * d, d);
          });
    });
    return PEER_OK;
  });
}

template <class Row>
int expert_backward(const char* fn, const float* x, const float* gates, const int64_t* indices, const Row* U,
                    const Row* V, const float* hidden, const float* dy, const int64_t* slot_to_row, int64_t unique_count,
                    int64_t T, int64_t m, int64_t d, int64_t N, int activation, float* dx, float* dgates, float* dU_rows,
                    float* dV_rows) {
  return peer::guarded(fn, [&]() -> int {
    PEER_REQUIRE(hidden, "%s: hidden is null", fn);
    PEER_REQUIRE(dy, "%s: dy is null", fn);
    PEER_REQUIRE(slot_to_row, "%s: slot_to_row is null", fn);
    PEER_REQUIRE(dx, "%s: dx is null", fn);
    PEER_REQUIRE(dgates, "%s: dgates is null", fn);
    PEER_REQUIRE(dU_rows, "%s: dU_rows is null", fn);
    PEER_REQUIRE(dV_rows, "%s: dV_rows is null", fn);
    if (int rc = check_common(fn, x, gates, indices, U, V, T, m, d, N, activation)) return rc;
    const int64_t slots = T * m;
    // A sorted unique list of the experts used has at most min(N, T*m) entries.
    PEER_REQUIRE(unique_count > 0 && unique_count <= N && unique_count <= slots,
                 "%s: unique_count must be in [1, min(N, T*m) = %lld], got %lld", fn, (long long)std::min(N, slots),
                 (long long)unique_count);

    // Counting sort of slots by unique row (stable, so each row sums its slots in slot order: deterministic).
    std::vector<int64_t> row_start(static_cast<size_t>(unique_count) + 1, 0);
    for (int64_t s = 0; s < slots; ++s) {
      const int64_t r = slot_to_row[s];
      PEER_REQUIRE(r >= 0 && r < unique_count, "%s: slot_to_row[%lld] = %lld is outside [0, unique_count = %lld)", fn,
                   (long long)s, (long long)r, (long long)unique_count);
      ++row_start[static_cast<size_t>(r) + 1];
    }
    for (int64_t r = 0; r < unique_count; ++r) row_start[r + 1] += row_start[r];
    std::vector<int64_t> fill(row_start.begin(), row_start.end() - 1);
    std::vector<int64_t> order(static_cast<size_t>(slots));
    for (int64_t s = 0; s < slots; ++s) order[static_cast<size_t>(fill[slot_to_row[s]]++)] = s;

    // Pass 1, over tokens: per-slot coefficients (reading V rows) and dx (reading U rows).
    std::vector<float> coef_u(static_cast<size_t>(slots)), coef_v(static_cast<size_t>(slots));
    const int64_t token_grain = std::max<int64_t>(1, 4096 / m);
    peer::parallel_for(T, token_grain, peer::worker_count(T, token_grain), [&](int64_t lo, int64_t hi, int) {
      for_each_slot(
          indices, U, V, lo, hi, m, d,
          [&](int64_t t) { std::memset(dx + t * d, 0, sizeof(float) * static_cast<size_t>(d)); },
          [&](int64_t t, int64_t s, int64_t e) {
            const float g = peer::dot(V + e * d, dy + t * d, d);  // V[idx]·dy[t]
            const float h = hidden[s];
            const float a = activate(activation, h);
            dgates[s] = a * g;
            const float cu = gates[s] * activate_grad(activation, h) * g;
            coef_u[static_cast<size_t>(s)] = cu;
            coef_v[static_cast<size_t>(s)] = gates[s] * a;
            peer::axpy(dx + t * d, cu, U + e * d, d);
          });
    });

    // Pass 2, over unique rows: each output row is owned by one chunk, so no atomics. The first slot of a row
    // assigns (most rows have just one), later ones accumulate.
    auto accumulate_rows = [&](int64_t lo, int64_t hi, int) {
      for (int64_t r = lo; r < hi; ++r) {
        float* du = dU_rows + r * d;
        float* dv = dV_rows + r * d;
        const int64_t first = row_start[r], end = row_start[r + 1];
        if (first == end) {
          std::memset(du, 0, sizeof(float) * static_cast<size_t>(d));
          std::memset(dv, 0, sizeof(float) * static_cast<size_t>(d));
        }
        for (int64_t o = first; o < end; ++o) {
          const size_t s = static_cast<size_t>(order[static_cast<size_t>(o)]);
          const int64_t t = static_cast<int64_t>(s) / m;
          if (o == first) {
            scale(du, coef_u[s], x + t * d, d);
            scale(dv, coef_v[s], dy + t * d, d);
          } else {
            peer::axpy(du, coef_u[s], x + t * d, d);
            peer::axpy(dv, coef_v[s], dy + t * d, d);
          }
        }
      }
    };
    const int64_t row_grain = 256;
    peer::parallel_for(unique_count, row_grain, peer::worker_count(unique_count, row_grain), accumulate_rows);
    return PEER_OK;
  });
}

}  // namespace

extern "C" {

PEER_API int peer_expert_forward_f32(const float* x, const float* gates, const int64_t* indices, const float* U,
                                     const float* V, int64_t T, int64_t m, int64_t d, int64_t N, int activation,
                                     float* y, float* hidden) {
  return expert_forward("peer_expert_forward_f32", x, gates, indices, U, V, T, m, d, N, activation, y, hidden);
}

PEER_API int peer_expert_forward_bf16(const float* x, const float* gates, const int64_t* indices, const uint16_t* U,
                                      const uint16_t* V, int64_t T, int64_t m, int64_t d, int64_t N, int activation,
                                      float* y, float* hidden) {
  return expert_forward("peer_expert_forward_bf16", x, gates, indices, U, V, T, m, d, N, activation, y, hidden);
}

PEER_API int peer_expert_backward_f32(const float* x, const float* gates, const int64_t* indices, const float* U,
                                      const float* V, const float* hidden, const float* dy, const int64_t* slot_to_row,
                                      int64_t unique_count, int64_t T, int64_t m, int64_t d, int64_t N, int activation,
                                      float* dx, float* dgates, float* dU_rows, float* dV_rows) {
  return expert_backward("peer_expert_backward_f32", x, gates, indices, U, V, hidden, dy, slot_to_row, unique_count, T,
                         m, d, N, activation, dx, dgates, dU_rows, dV_rows);
}

PEER_API int peer_expert_backward_bf16(const float* x, const float* gates, const int64_t* indices, const uint16_t* U,
                                       const uint16_t* V, const float* hidden, const float* dy,
                                       const int64_t* slot_to_row, int64_t unique_count, int64_t T, int64_t m,
                                       int64_t d, int64_t N, int activation, float* dx, float* dgates, float* dU_rows,
                                       float* dV_rows) {
  return expert_backward("peer_expert_backward_bf16", x, gates, indices, U, V, hidden, dy, slot_to_row, unique_count, T,
                         m, d, N, activation, dx, dgates, dU_rows, dV_rows);
}

}  // extern "C"
