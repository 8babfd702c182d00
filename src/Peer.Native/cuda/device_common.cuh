// Device side shared by the peer_native_cuda kernels.
#pragma once

#include <cstdint>

#include "peer_native_cuda.h"

namespace peer_cuda {

constexpr unsigned kFullMask = 0xffffffffu;

// The block's dynamic shared memory; each kernel carves it up with a layout computed on the host. (No static
// __shared__ variables: every kernel keeps all of its shared state here.)
extern __shared__ __align__(16) unsigned char dynamic_smem[];

__device__ __forceinline__ float warp_sum(float value) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(kFullMask, value, offset);
  return value;
}

}  // namespace peer_cuda
