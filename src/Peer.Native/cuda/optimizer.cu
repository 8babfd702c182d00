// Sparse AdamW: one block per touched row (grid-stride), each row with its own step count, so a
// row's bias correction reflects how often it has been updated rather than the global step.
#include "common.cuh"
#include "optimizer_kernels.cuh"

#include <climits>
#include <cmath>

extern "C" PEER_CUDA_API int peer_cuda_sparse_adamw_f32(float* param, float* exp_avg, float* exp_avg_sq,
                                                        int64_t* row_steps, int64_t N, int64_t d, const int64_t* rows,
                                                        const float* row_grads, int64_t count, float lr, float beta1,
                                                        float beta2, float eps, float weight_decay, float grad_scale,
                                                        void* stream) {
  using namespace peer_cuda;
  const std::string fn = "peer_cuda_sparse_adamw_f32";
  if (param == nullptr || exp_avg == nullptr || exp_avg_sq == nullptr || row_steps == nullptr || rows == nullptr ||
      row_grads == nullptr)
    return invalid_argument(fn + ": param, exp_avg, exp_avg_sq, row_steps, rows and row_grads must not be null");
  if (N < 1) return invalid_argument(fn + ": N must be positive, got " + std::to_string(N));
  if (d < 1 || d > INT32_MAX || N > INT64_MAX / 16 / d)
    return invalid_argument(fn + ": d must be in [1, 2^31) and N*d must fit");
  if (count < 1 || count > N)
    return invalid_argument(fn + ": count must be in [1, N = " + std::to_string(N) + "], got " + std::to_string(count));
  if (!(std::isfinite(lr) && lr >= 0.0f)) return invalid_argument(fn + ": lr must be finite and >= 0");
  if (!(beta1 >= 0.0f && beta1 < 1.0f)) return invalid_argument(fn + ": beta1 must be in [0, 1)");
  if (!(beta2 >= 0.0f && beta2 < 1.0f)) return invalid_argument(fn + ": beta2 must be in [0, 1)");
  if (!(std::isfinite(eps) && eps >= 0.0f)) return invalid_argument(fn + ": eps must be finite and >= 0");
  if (!(std::isfinite(weight_decay) && weight_decay >= 0.0f))
    return invalid_argument(fn + ": weight_decay must be finite and >= 0");
  if (!std::isfinite(grad_scale)) return invalid_argument(fn + ": grad_scale must be finite");

  const int threads = d <= 32 ? 32 : d <= 64 ? 64 : d <= 128 ? 128 : 256;
  const unsigned blocks = static_cast<unsigned>(count < (1 << 20) ? count : (1 << 20));
  sparse_adamw_kernel<<<blocks, threads, 2 * sizeof(float), as_stream(stream)>>>(param, exp_avg, exp_avg_sq, row_steps, N,
                                                                 static_cast<int>(d), rows, row_grads, count, lr,
                                                                 beta1, beta2, eps, weight_decay, grad_scale);
  return check_launch(fn.c_str());
}
