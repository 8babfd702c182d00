// Kernels of experts.cu (see there for the method); host entry points stay in experts.cu.
#pragma once

#include "device_common.cuh"

namespace peer_cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__host__ __device__ inline int round_up4(int value) { return (value + 3) & ~3; }

__device__ __forceinline__ float activate(int activation, float h) {
  return activation == PEER_CUDA_ACTIVATION_GELU ? 0.5f * h * (1.0f + erff(h * 0.70710678118654752f))
                                                 : (h < 0.0f ? 0.0f : h);  // keeps NaN, like torch.relu
}

__device__ __forceinline__ float activate_grad(int activation, float h) {
  // d/dh [h Phi(h)] = Phi(h) + h phi(h); ReLU's gradient is 0 at 0, as in PyTorch.
  return activation == PEER_CUDA_ACTIVATION_GELU
             ? 0.5f * (1.0f + erff(h * 0.70710678118654752f)) + h * 0.39894228040143268f * expf(-0.5f * h * h)
             : (h > 0.0f ? 1.0f : 0.0f);
}

// row (global, d floats) · vec (shared), by one warp.
template <bool VEC>
__device__ __forceinline__ float warp_dot(const float* __restrict__ row, const float* vec, int d) {
  const int lane = threadIdx.x & 31;
  float acc = 0.0f;
  if (VEC) {
    const float4* row4 = reinterpret_cast<const float4*>(row);
    const float4* vec4 = reinterpret_cast<const float4*>(vec);
    for (int c = lane; c < d / 4; c += 32) {
      const float4 a = __ldg(row4 + c), b = vec4[c];
      acc = fmaf(a.x, b.x, acc);
      acc = fmaf(a.y, b.y, acc);
      acc = fmaf(a.z, b.z, acc);
      acc = fmaf(a.w, b.w, acc);
    }
  } else {
    for (int c = lane; c < d; c += 32) acc = fmaf(__ldg(row + c), vec[c], acc);
  }
  return warp_sum(acc);
}

// Warp 0 lists, in slot order, the slots for which live(j) holds, and stores how many in *count (read it after a
// __syncthreads).
template <class Live>
__device__ __forceinline__ void list_live_slots(int m, const Live& live, int* list, int* count) {
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    int written = 0;
    for (int base = 0; base < m; base += 32) {
      const int j = base + lane;
      const bool keep = j < m && live(j);
      const unsigned ballot = __ballot_sync(kFullMask, keep);
      if (keep) list[written + __popc(ballot & ((1u << lane) - 1u))] = j;
      written += __popc(ballot);
    }
    if (lane == 0) *count = written;
  }
}

struct ForwardLayout {
  size_t x, expert, coef, live, live_count, total;
};

inline ForwardLayout forward_layout(int m, int d) {
  ForwardLayout l{};
  l.x = 0;
  l.expert = l.x + sizeof(float) * round_up4(d);
  l.coef = l.expert + sizeof(long long) * m;
  l.live = l.coef + sizeof(float) * m;
  l.live_count = l.live + sizeof(int) * m;
  l.total = l.live_count + sizeof(int);
  return l;
}

template <bool VEC>
__global__ void __launch_bounds__(kThreads)
    expert_forward_kernel(const float* __restrict__ x, const float* __restrict__ gates,
                          const int64_t* __restrict__ indices, const float* __restrict__ U,
                          const float* __restrict__ V, int m, int d, long long N, int activation, ForwardLayout layout,
                          float* __restrict__ y, float* __restrict__ hidden) {
  unsigned char* smem = dynamic_smem;
  float* xs = reinterpret_cast<float*>(smem + layout.x);
  long long* expert = reinterpret_cast<long long*>(smem + layout.expert);
  float* coef = reinterpret_cast<float*>(smem + layout.coef);
  int* live = reinterpret_cast<int*>(smem + layout.live);
  int* live_count = reinterpret_cast<int*>(smem + layout.live_count);

  const long long t = blockIdx.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int c = threadIdx.x; c < d; c += kThreads) xs[c] = x[t * d + c];
  __syncthreads();

  for (int j = warp; j < m; j += kWarps) {
    const long long slot = t * m + j;
    const long long e = indices[slot];
    const bool valid = e >= 0 && e < N;
    const float h = valid ? warp_dot<VEC>(U + e * d, xs, d) : 0.0f;
    if (lane == 0) {
      hidden[slot] = h;
      coef[j] = valid ? gates[slot] * activate(activation, h) : 0.0f;
      expert[j] = e;
    }
  }
  __syncthreads();
  list_live_slots(m, [coef](int j) { return coef[j] != 0.0f; }, live, live_count);
  __syncthreads();

  const int count = *live_count;
  for (int c = threadIdx.x; c < d; c += kThreads) {
    float acc = 0.0f;
#pragma unroll 4
    for (int i = 0; i < count; ++i) {
      const int j = live[i];
      acc = fmaf(coef[j], __ldg(V + expert[j] * d + c), acc);
    }
    y[t * d + c] = acc;
  }
}

struct BackwardLayout {
  size_t x, dy, expert, row, coef_u, coef_v, live, live_count, total;
};

inline BackwardLayout backward_layout(int m, int d) {
  BackwardLayout l{};
  l.x = 0;
  l.dy = l.x + sizeof(float) * round_up4(d);
  l.expert = l.dy + sizeof(float) * round_up4(d);
  l.row = l.expert + sizeof(long long) * m;
  l.coef_u = l.row + sizeof(long long) * m;
  l.coef_v = l.coef_u + sizeof(float) * m;
  l.live = l.coef_v + sizeof(float) * m;
  l.live_count = l.live + sizeof(int) * m;
  l.total = l.live_count + sizeof(int);
  return l;
}

template <bool VEC>
__global__ void __launch_bounds__(kThreads)
    expert_backward_kernel(const float* __restrict__ x, const float* __restrict__ gates,
                           const int64_t* __restrict__ indices, const float* __restrict__ U,
                           const float* __restrict__ V, const float* __restrict__ hidden, const float* __restrict__ dy,
                           const int64_t* __restrict__ slot_to_row, long long unique_count, int m, int d, long long N,
                           int activation, BackwardLayout layout, float* __restrict__ dx, float* __restrict__ dgates,
                           float* __restrict__ dU_rows, float* __restrict__ dV_rows) {
  unsigned char* smem = dynamic_smem;
  float* xs = reinterpret_cast<float*>(smem + layout.x);
  float* dys = reinterpret_cast<float*>(smem + layout.dy);
  long long* expert = reinterpret_cast<long long*>(smem + layout.expert);
  long long* row = reinterpret_cast<long long*>(smem + layout.row);
  float* coef_u = reinterpret_cast<float*>(smem + layout.coef_u);  // gate * act'(h) * (V[e]·dy)
  float* coef_v = reinterpret_cast<float*>(smem + layout.coef_v);  // gate * act(h)
  int* live = reinterpret_cast<int*>(smem + layout.live);
  int* live_count = reinterpret_cast<int*>(smem + layout.live_count);

  const long long t = blockIdx.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int c = threadIdx.x; c < d; c += kThreads) {
    xs[c] = x[t * d + c];
    dys[c] = dy[t * d + c];
  }
  __syncthreads();

  for (int j = warp; j < m; j += kWarps) {
    const long long slot = t * m + j;
    const long long e = indices[slot], r = slot_to_row[slot];
    const bool valid = e >= 0 && e < N && r >= 0 && r < unique_count;
    const float v_dot_dy = valid ? warp_dot<VEC>(V + e * d, dys, d) : 0.0f;
    if (lane == 0) {
      const float h = hidden[slot], gate = gates[slot];
      const float a = activate(activation, h);
      dgates[slot] = valid ? a * v_dot_dy : 0.0f;
      coef_u[j] = valid ? gate * activate_grad(activation, h) * v_dot_dy : 0.0f;
      coef_v[j] = valid ? gate * a : 0.0f;
      expert[j] = e;
      row[j] = r;
    }
  }
  __syncthreads();
  list_live_slots(
      m, [coef_u, coef_v](int j) { return coef_u[j] != 0.0f || coef_v[j] != 0.0f; }, live, live_count);
  __syncthreads();

  const int count = *live_count;
  for (int c = threadIdx.x; c < d; c += kThreads) {
    const float xc = xs[c], dyc = dys[c];
    float acc = 0.0f;
    for (int i = 0; i < count; ++i) {
      const int j = live[i];
      const float cu = coef_u[j], cv = coef_v[j];
      const long long out = row[j] * d + c;
      if (cu != 0.0f) {  // uniform across the block: j is
        acc = fmaf(cu, __ldg(U + expert[j] * d + c), acc);
        atomicAdd(dU_rows + out, cu * xc);
      }
      if (cv != 0.0f) atomicAdd(dV_rows + out, cv * dyc);
    }
    dx[t * d + c] = acc;
  }
}

}  // namespace
}  // namespace peer_cuda
