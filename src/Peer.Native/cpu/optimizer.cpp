// Row-sparse AdamW: updates only the expert rows that received gradients, each with its own step count, so rarely
// used experts get the bias correction of the updates they actually had.
#include <cmath>

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

}  // namespace

extern "C" {

PEER_API int peer_sparse_adamw_f32(float* param, float* exp_avg, float* exp_avg_sq, int64_t* row_steps, int64_t N,
                                   int64_t d, const int64_t* rows, const float* row_grads, int64_t count, float lr,
                                   float beta1, float beta2, float eps, float weight_decay, float grad_scale) {
  static const char* const fn = "peer_sparse_adamw_f32";
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
          peer::prefetch_row_for_write(param + next, d * 4);
          peer::prefetch_row_for_write(exp_avg + next, d * 4);
          peer::prefetch_row_for_write(exp_avg_sq + next, d * 4);
        }
        const int64_t row = rows[i];
        const int64_t step = ++row_steps[row];
        // Bias corrections in double: 1 - 0.999^s loses most of its digits in float for small s.
        const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
        const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
        update_row(param + row * d, exp_avg + row * d, exp_avg_sq + row * d, row_grads + i * d, d, hyper,
                   static_cast<float>(1.0 / bc1), static_cast<float>(1.0 / bc2));
      }
    });
    return PEER_OK;
  });
}

}  // extern "C"
