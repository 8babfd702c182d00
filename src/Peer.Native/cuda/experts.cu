// Fused PEER expert forward/backward: one block per token, nothing gathered.
//
// Phase 1 gives each warp whole slots: a coalesced read of the slot's U (forward) or V (backward)
// row, dotted with the token's x or dy held in shared memory, yields the per-slot coefficients.
// Phase 2 gives each thread output columns: for every live slot the block reads the slot's other
// expert row across its threads (coalesced) and accumulates the token's y or dx in registers;
// the backward pass also adds the slot's dU/dV row contributions with coalesced atomics. Slots
// whose coefficients are zero (ReLU off, zero gate) are dropped before phase 2, so their rows are
// never read.
#include "common.cuh"
#include "experts_kernels.cuh"

#include <climits>

namespace peer_cuda {
namespace {

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Checks shared by forward and backward (the CPU's, plus the grid and shared-memory bounds); returns a status.
int check_expert_args(const char* fn, const float* x, const float* gates, const int64_t* indices, const float* U,
                      const float* V, int64_t T, int64_t m, int64_t d, int64_t N, int activation) {
  const std::string f = fn;
  if (x == nullptr || gates == nullptr || indices == nullptr || U == nullptr || V == nullptr)
    return invalid_argument(f + ": x, gates, indices, U and V must not be null");
  if (T < 1 || T > INT32_MAX) return invalid_argument(f + ": T must be in [1, 2^31), got " + std::to_string(T));
  if (m < 1 || m > (1 << 20)) return invalid_argument(f + ": m must be in [1, 2^20], got " + std::to_string(m));
  if (d < 1 || d > (1 << 24)) return invalid_argument(f + ": d must be in [1, 2^24], got " + std::to_string(d));
  if (N < 1 || N > INT64_MAX / 16 / d) return invalid_argument(f + ": N must be positive and N*d must fit");
  if (T > INT64_MAX / 16 / m || T > INT64_MAX / 16 / d) return invalid_argument(f + ": T*m or T*d is too large");
  if (activation != PEER_CUDA_ACTIVATION_GELU && activation != PEER_CUDA_ACTIVATION_RELU)
    return invalid_argument(f + ": activation must be 0 (GELU) or 1 (ReLU), got " + std::to_string(activation));
  return PEER_CUDA_STATUS_OK;
}

}  // namespace
}  // namespace peer_cuda

extern "C" PEER_CUDA_API int peer_cuda_expert_forward_f32(const float* x, const float* gates, const int64_t* indices,
                                                          const float* U, const float* V, int64_t T, int64_t m,
                                                          int64_t d, int64_t N, int activation, float* y, float* hidden,
                                                          void* stream) {
  using namespace peer_cuda;
  const char* fn = "peer_cuda_expert_forward_f32";
  if (y == nullptr || hidden == nullptr) return invalid_argument(std::string(fn) + ": y and hidden must not be null");
  int status = check_expert_args(fn, x, gates, indices, U, V, T, m, d, N, activation);
  if (status != PEER_CUDA_STATUS_OK) return status;

  const int im = static_cast<int>(m), id = static_cast<int>(d);
  const ForwardLayout layout = forward_layout(im, id);
  const bool vec = d % 4 == 0 && aligned16(U);
  auto kernel = vec ? expert_forward_kernel<true> : expert_forward_kernel<false>;
  status = reserve_shared_memory(fn, reinterpret_cast<const void*>(kernel), layout.total);
  if (status != PEER_CUDA_STATUS_OK) return status;
  kernel<<<static_cast<unsigned>(T), kThreads, layout.total, as_stream(stream)>>>(x, gates, indices, U, V, im, id, N,
                                                                                 activation, layout, y, hidden);
  return check_launch(fn);
}

extern "C" PEER_CUDA_API int peer_cuda_expert_backward_f32(const float* x, const float* gates, const int64_t* indices,
                                                           const float* U, const float* V, const float* hidden,
                                                           const float* dy, const int64_t* slot_to_row,
                                                           int64_t unique_count, int64_t T, int64_t m, int64_t d,
                                                           int64_t N, int activation, float* dx, float* dgates,
                                                           float* dU_rows, float* dV_rows, void* stream) {
  using namespace peer_cuda;
  const char* fn = "peer_cuda_expert_backward_f32";
  if (hidden == nullptr || dy == nullptr || slot_to_row == nullptr || dx == nullptr || dgates == nullptr ||
      dU_rows == nullptr || dV_rows == nullptr)
    return invalid_argument(std::string(fn) +
                            ": hidden, dy, slot_to_row, dx, dgates, dU_rows and dV_rows must not be null");
  int status = check_expert_args(fn, x, gates, indices, U, V, T, m, d, N, activation);
  if (status != PEER_CUDA_STATUS_OK) return status;
  if (unique_count < 1 || unique_count > N || unique_count > T * m)
    return invalid_argument(std::string(fn) + ": unique_count must be in [1, min(N, T*m)], got " +
                            std::to_string(unique_count));

  const cudaStream_t s = as_stream(stream);
  const size_t row_bytes = static_cast<size_t>(unique_count) * static_cast<size_t>(d) * sizeof(float);
  cudaError_t error = cudaMemsetAsync(dU_rows, 0, row_bytes, s);
  if (error == cudaSuccess) error = cudaMemsetAsync(dV_rows, 0, row_bytes, s);
  if (error != cudaSuccess) return cuda_failure(fn, "cudaMemsetAsync", error);

  const int im = static_cast<int>(m), id = static_cast<int>(d);
  const BackwardLayout layout = backward_layout(im, id);
  const bool vec = d % 4 == 0 && aligned16(V);
  auto kernel = vec ? expert_backward_kernel<true> : expert_backward_kernel<false>;
  status = reserve_shared_memory(fn, reinterpret_cast<const void*>(kernel), layout.total);
  if (status != PEER_CUDA_STATUS_OK) return status;
  kernel<<<static_cast<unsigned>(T), kThreads, layout.total, s>>>(x, gates, indices, U, V, hidden, dy, slot_to_row,
                                                                 unique_count, im, id, N, activation, layout, dx,
                                                                 dgates, dU_rows, dV_rows);
  return check_launch(fn);
}
