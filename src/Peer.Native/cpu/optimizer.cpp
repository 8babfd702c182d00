// Row-sparse AdamW: updates only the expert rows that received gradients, each with its own step count, so rarely
// used experts get the bias correction of the updates they actually had. The bf16 variant keeps the table and both
// moments in bfloat16 (half the bytes per touched row) and stores them with stochastic rounding.
#include <cmath>
#include <type_traits>

#include "peer_internal.h"

namespace {

struct AdamW {
  float lr, beta1, beta2, eps, decay, grad_scale;
};

// One row. Kept out of line with restrict pointers and scalars by value: inlined into the lambda, GCC loses the
// restrict facts and picks its scalar fallback at run time (measured 4x slower).
__attribute__((noinline)) void update_row(float* __restrict p, float* __restrict m, float* __restrict v,
                                          const float* __restrict g, int64_t d, AdamW h, float inv_bc1, float inv_bc2) {
  const float one_minus_b1 = 1.0f - h.beta1, one_minus_b2 = 1.0f - h.beta2;
  for (int64_t c = 0; c < d; ++c) {
    const float gc = h.grad_scale * g[c];
    const float mc = h.beta1 * m[c] + one_minus_b1 * gc;
    const float vc = h.beta2 * v[c] + one_minus_b2 * gc * gc;
    m[c] = mc;
    v[c] = vc;
    p[c] = p[c] * h.decay - h.lr * (mc * inv_bc1) / (std::sqrt(vc * inv_bc2) + h.eps);
  }
}

// in[0, n) rounded to bf16 stochastically into out, with 16 bits of noise per element taken from hashes[j] by `pick`.
template <class Pick>
inline void store_stochastic(uint16_t* __restrict out, const float* __restrict in, const uint32_t* __restrict hashes,
                             int64_t n, Pick pick) {
  for (int64_t j = 0; j < n; ++j) out[j] = peer::float_to_bf16_stochastic(in[j], pick(hashes[j]));
}

inline void widen(float* __restrict out, const uint16_t* __restrict in, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = peer::bf16_to_float(in[j]);
}

// The same update on bf16 rows, a block of columns at a time: widened exactly into fp32 scratch, updated there by the
// fp32 update_row (so the new values equal the fp32 kernel's on the widened table, bit for bit), then each stored with
// stochastic rounding. The noise is hashed per element (integer ops that vectorise) rather than drawn from a
// sequential generator, which would not; one hash per element serves the three tensors (its low half, its high half and
// the high half of its product with an odd constant), since hashing each separately made the step compute-bound on 2
// Zen 3 cores (2.0x the fp32 kernel's time; 0.96-1.26x with one hash, both beside another busy process). The kernel
// still does more arithmetic per byte than the fp32 one, so its gain is in memory (half the bytes) more than time.
// Separate passes rather than one fused loop: fused, the AdamW
// constants, the hashes and three tensors of 16 lanes exceed the 16 AVX2 registers and spill (measured 1.15x slower).
__attribute__((noinline)) void update_row(uint16_t* __restrict p, uint16_t* __restrict m, uint16_t* __restrict v,
                                          const float* __restrict g, int64_t d, AdamW h, float inv_bc1, float inv_bc2,
                                          uint32_t key) {
  constexpr int64_t kBlock = 256;  // a whole target row; 4 KB of scratch
  float wide_p[kBlock], wide_m[kBlock], wide_v[kBlock];
  uint32_t hashes[kBlock];
  for (int64_t c0 = 0; c0 < d; c0 += kBlock) {
    const int64_t n = std::min(kBlock, d - c0);
    widen(wide_p, p + c0, n);
    widen(wide_m, m + c0, n);
    widen(wide_v, v + c0, n);
    update_row(wide_p, wide_m, wide_v, g + c0, n, h, inv_bc1, inv_bc2);
    // Column counted in 32 bits: derived from an int64 per lane, it costs shuffles per vector.
    const uint32_t first = static_cast<uint32_t>(c0);
    for (int64_t j = 0; j < n; ++j) hashes[j] = peer::mix32(key ^ (first + static_cast<uint32_t>(j)));
    store_stochastic(p + c0, wide_p, hashes, n, [](uint32_t x) { return x & 0xFFFFu; });
    store_stochastic(m + c0, wide_m, hashes, n, [](uint32_t x) { return x >> 16; });
    store_stochastic(v + c0, wide_v, hashes, n, [](uint32_t x) { return static_cast<uint32_t>(x * 0x9E3779B1u) >> 16; });
  }
}

template <class Row>
int sparse_adamw(const char* fn, Row* param, Row* exp_avg, Row* exp_avg_sq, int64_t* row_steps, int64_t N, int64_t d,
                 const int64_t* rows, const float* row_grads, int64_t count, float lr, float beta1, float beta2,
                 float eps, float weight_decay, float grad_scale, uint64_t seed) {
  return peer::guarded(fn, [&]() -> int {
    PEER_REQUIRE(param, "%s: param is null", fn);
    PEER_REQUIRE(exp_avg, "%s: exp_avg is null", fn);
    PEER_REQUIRE(exp_avg_sq, "%s: exp_avg_sq is null", fn);
    PEER_REQUIRE(row_steps, "%s: row_steps is null", fn);
    PEER_REQUIRE(rows, "%s: rows is null", fn);
    PEER_REQUIRE(row_grads, "%s: row_grads is null", fn);
    PEER_REQUIRE(N > 0, "%s: N must be positive, got %lld", fn, (long long)N);
    PEER_REQUIRE(d > 0, "%s: d must be positive, got %lld", fn, (long long)d);
    PEER_REQUIRE(count > 0 && count <= N, "%s: count must be in [1, N = %lld], got %lld", fn, (long long)N,
                 (long long)count);
    int64_t size;
    PEER_REQUIRE(peer::checked_mul(N, d, &size), "%s: sizes too large (N = %lld, d = %lld)", fn, (long long)N,
                 (long long)d);
    // Same ranges as torch.optim.AdamW; written as negations so NaN fails them.
    PEER_REQUIRE(std::isfinite(lr) && lr >= 0.0f, "%s: lr must be finite and >= 0, got %g", fn, (double)lr);
    PEER_REQUIRE(beta1 >= 0.0f && beta1 < 1.0f, "%s: beta1 must be in [0, 1), got %g", fn, (double)beta1);
    PEER_REQUIRE(beta2 >= 0.0f && beta2 < 1.0f, "%s: beta2 must be in [0, 1), got %g", fn, (double)beta2);
    PEER_REQUIRE(std::isfinite(eps) && eps >= 0.0f, "%s: eps must be finite and >= 0, got %g", fn, (double)eps);
    PEER_REQUIRE(std::isfinite(weight_decay) && weight_decay >= 0.0f,
                 "%s: weight_decay must be finite and >= 0, got %g", fn, (double)weight_decay);
    PEER_REQUIRE(std::isfinite(grad_scale), "%s: grad_scale must be finite, got %g", fn, (double)grad_scale);
    // Checked before anything is written, so a rejected call changes nothing.
    for (int64_t i = 0; i < count; ++i) {
      const int64_t row = rows[i];
      PEER_REQUIRE(row >= 0 && row < N, "%s: rows[%lld] = %lld is outside [0, N = %lld)", fn, (long long)i,
                   (long long)row, (long long)N);
      PEER_REQUIRE(i == 0 || row > rows[i - 1],
                   "%s: rows must be strictly increasing, but rows[%lld] = %lld follows %lld", fn, (long long)i,
                   (long long)row, (long long)rows[i - 1]);
      PEER_REQUIRE(row_steps[row] >= 0 && row_steps[row] < INT64_MAX, "%s: row_steps[%lld] = %lld is invalid", fn,
                   (long long)row, (long long)row_steps[row]);
    }

    const AdamW hyper{lr, beta1, beta2, eps, 1.0f - lr * weight_decay, grad_scale};
    const int64_t grain = 64;
    peer::parallel_for(count, grain, peer::worker_count(count, grain), [&](int64_t lo, int64_t hi, int) {
      for (int64_t i = lo; i < hi; ++i) {
        if (i + 1 < hi) {  // rows are sparse, so the hardware prefetcher does not see the next one coming
          const int64_t next = rows[i + 1] * d;
          peer::prefetch_row_for_write(param + next, d * static_cast<int64_t>(sizeof(Row)));
          peer::prefetch_row_for_write(exp_avg + next, d * static_cast<int64_t>(sizeof(Row)));
          peer::prefetch_row_for_write(exp_avg_sq + next, d * static_cast<int64_t>(sizeof(Row)));
        }
        const int64_t row = rows[i];
        const int64_t step = ++row_steps[row];
        // Bias corrections in double: 1 - 0.999^s loses most of its digits in float for small s.
        const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
        const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
        if constexpr (std::is_same_v<Row, float>) {
          (void)seed;
          update_row(param + row * d, exp_avg + row * d, exp_avg_sq + row * d, row_grads + i * d, d, hyper,
                     static_cast<float>(1.0 / bc1), static_cast<float>(1.0 / bc2));
        } else {
          update_row(param + row * d, exp_avg + row * d, exp_avg_sq + row * d, row_grads + i * d, d, hyper,
                     static_cast<float>(1.0 / bc1), static_cast<float>(1.0 / bc2),
                     peer::stochastic_row_key(seed, row, step));
        }
      }
    });
    return PEER_OK;
  });
}

}  // namespace

extern "C" {

PEER_API int peer_sparse_adamw_f32(float* param, float* exp_avg, float* exp_avg_sq, int64_t* row_steps, int64_t N,
                                   int64_t d, const int64_t* rows, const float* row_grads, int64_t count, float lr,
                                   float beta1, float beta2, float eps, float weight_decay, float grad_scale) {
  return sparse_adamw("peer_sparse_adamw_f32", param, exp_avg, exp_avg_sq, row_steps, N, d, rows, row_grads, count, lr,
                      beta1, beta2, eps, weight_decay, grad_scale, 0);
}

PEER_API int peer_sparse_adamw_bf16(uint16_t* param, uint16_t* exp_avg, uint16_t* exp_avg_sq, int64_t* row_steps,
                                    int64_t N, int64_t d, const int64_t* rows, const float* row_grads, int64_t count,
                                    float lr, float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                                    uint64_t seed) {
  return sparse_adamw("peer_sparse_adamw_bf16", param, exp_avg, exp_avg_sq, row_steps, N, d, rows, row_grads, count,
                      lr, beta1, beta2, eps, weight_decay, grad_scale, seed);
}

}  // extern "C"
