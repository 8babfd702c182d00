// Kernel of optimizer.cu; the host entry point stays there.
#pragma once

#include "device_common.cuh"

namespace peer_cuda {
namespace {

__global__ void sparse_adamw_kernel(float* __restrict__ param, float* __restrict__ exp_avg,
                                    float* __restrict__ exp_avg_sq, int64_t* __restrict__ row_steps, long long N, int d,
                                    const int64_t* __restrict__ rows, const float* __restrict__ row_grads,
                                    long long count, float lr, float beta1, float beta2, float eps, float weight_decay,
                                    float grad_scale) {
  float* inv_corrections = reinterpret_cast<float*>(dynamic_smem);  // 1/(1 - b1^s), 1/(1 - b2^s) of the row
  for (long long i = blockIdx.x; i < count; i += gridDim.x) {
    const long long row = rows[i];
    if (row < 0 || row >= N) continue;  // same row for the whole block, so uniform
    __syncthreads();                    // the previous row's readers of the corrections are done
    if (threadIdx.x == 0) {
      const long long step = row_steps[row] + 1;
      row_steps[row] = step;
      // As on the CPU: corrections in double, applied as float reciprocals.
      inv_corrections[0] = static_cast<float>(1.0 / (1.0 - pow(static_cast<double>(beta1), static_cast<double>(step))));
      inv_corrections[1] = static_cast<float>(1.0 / (1.0 - pow(static_cast<double>(beta2), static_cast<double>(step))));
    }
    __syncthreads();
    const float inv1 = inv_corrections[0], inv2 = inv_corrections[1], decay = 1.0f - lr * weight_decay;
    float* p = param + row * d;
    float* m = exp_avg + row * d;
    float* v = exp_avg_sq + row * d;
    const float* g = row_grads + i * d;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
      const float grad = grad_scale * g[c];
      const float mc = beta1 * m[c] + (1.0f - beta1) * grad;
      const float vc = beta2 * v[c] + (1.0f - beta2) * grad * grad;
      m[c] = mc;
      v[c] = vc;
      p[c] = p[c] * decay - lr * (mc * inv1) / (sqrtf(vc * inv2) + eps);
    }
  }
}

}  // namespace
}  // namespace peer_cuda
