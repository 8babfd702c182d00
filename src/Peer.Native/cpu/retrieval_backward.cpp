// Backward of product-key scores for the selected keys only. dq needs a gather of k sub-key rows per query half;
// dsub_keys is a scatter-add into the 2n sub-key rows, accumulated in per-worker buffers (no atomics) and summed at
// the end. Float sums of dsub_keys may differ in the last bits between thread counts.
#include <cstring>
#include <vector>

#include "peer_internal.h"

PEER_API int peer_selected_key_backward_f32(const float* queries, const float* sub_keys, const int64_t* indices,
                                            const float* dscores, int64_t rows, int64_t n, int64_t key_dim, int64_t k,
                                            float* dqueries, float* dsub_keys) {
  static const char* const fn = "peer_selected_key_backward_f32";
  return peer::guarded(fn, [&]() -> int {
    PEER_REQUIRE(queries && sub_keys && indices && dscores && dqueries && dsub_keys, "%s: a pointer argument is null", fn);
    PEER_REQUIRE(rows > 0, "%s: rows must be positive, got %lld", fn, (long long)rows);
    PEER_REQUIRE(n > 0, "%s: n must be positive, got %lld", fn, (long long)n);
    PEER_REQUIRE(key_dim > 0 && key_dim % 2 == 0, "%s: key_dim must be positive and even, got %lld", fn, (long long)key_dim);
    PEER_REQUIRE(k > 0 && k <= n, "%s: k must be in [1, n = %lld], got %lld", fn, (long long)n, (long long)k);
    int64_t size, keys;
    PEER_REQUIRE(peer::checked_mul(rows, key_dim, &size) && peer::checked_mul(rows, k, &size) &&
                     peer::checked_mul(n, n, &keys) && peer::checked_mul(2 * n, key_dim, &size),
                 "%s: sizes too large (rows = %lld, n = %lld, key_dim = %lld, k = %lld)", fn, (long long)rows,
                 (long long)n, (long long)key_dim, (long long)k);
    for (int64_t i = 0; i < rows * k; ++i)
      PEER_REQUIRE(indices[i] >= 0 && indices[i] < keys, "%s: indices[%lld] = %lld is outside [0, n*n = %lld)", fn,
                   (long long)i, (long long)indices[i], (long long)keys);

    const int64_t h = key_dim / 2;
    const int64_t grain = 64;
    const int workers = peer::worker_count(rows, grain);
    const int64_t table = 2 * n * h;
    std::vector<float> partial(static_cast<size_t>(workers) * static_cast<size_t>(table), 0.0f);
    // Chunk c of rows goes to worker c % workers, each with its own dsub_keys buffer.
    const int64_t chunks = (rows + grain - 1) / grain;
    peer::parallel_for(workers, 1, workers, [&](int64_t lo, int64_t hi, int) {
      for (int64_t w = lo; w < hi; ++w) {
        float* acc = partial.data() + w * table;
        for (int64_t c = w; c < chunks; c += workers) {
          const int64_t first = c * grain, last = std::min(rows, first + grain);
          for (int64_t r = first; r < last; ++r) {
            const float* q = queries + r * key_dim;
            float* dq = dqueries + r * key_dim;
            std::memset(dq, 0, sizeof(float) * static_cast<size_t>(key_dim));
            for (int64_t j = 0; j < k; ++j) {
              const int64_t index = indices[r * k + j];
              const float g = dscores[r * k + j];
              const int64_t a = index / n, b = index % n;
              const float* c1 = sub_keys + a * h;
              const float* c2 = sub_keys + (n + b) * h;
              float* d1 = acc + a * h;
              float* d2 = acc + (n + b) * h;
              for (int64_t p = 0; p < h; ++p) {
                dq[p] += g * c1[p];
                dq[h + p] += g * c2[p];
                d1[p] += g * q[p];
                d2[p] += g * q[h + p];
              }
            }
          }
        }
      }
    });
    std::memcpy(dsub_keys, partial.data(), sizeof(float) * static_cast<size_t>(table));
    for (int w = 1; w < workers; ++w) {
      const float* src = partial.data() + static_cast<int64_t>(w) * table;
      for (int64_t i = 0; i < table; ++i) dsub_keys[i] += src[i];
    }
    return PEER_OK;
  });
}
