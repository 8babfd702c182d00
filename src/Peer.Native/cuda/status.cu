// Error state and device-limit helpers shared by the peer_native_cuda entry points.
#include "common.cuh"

namespace peer_cuda {
namespace {
thread_local std::string last_error;  // "" until a call fails on this thread
}

int set_error(int status, const std::string& message) {
  last_error = message;
  return status;
}

int shared_memory_limit(const char* fn, size_t* bytes) {
  int device = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error != cudaSuccess) return cuda_failure(fn, "cudaGetDevice", error);
  int optin = 0;
  error = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (error != cudaSuccess) return cuda_failure(fn, "cudaDeviceGetAttribute", error);
  *bytes = static_cast<size_t>(optin);
  return PEER_CUDA_STATUS_OK;
}

int reserve_shared_memory(const char* fn, const void* kernel, size_t bytes) {
  size_t optin = 0;
  const int status = shared_memory_limit(fn, &optin);
  if (status != PEER_CUDA_STATUS_OK) return status;
  if (bytes > optin)
    return invalid_argument(std::string(fn) + ": needs " + std::to_string(bytes) +
                            " bytes of shared memory per block; this device allows " + std::to_string(optin));
  if (bytes > 48 * 1024) {
    const cudaError_t error =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    if (error != cudaSuccess) return cuda_failure(fn, "cudaFuncSetAttribute", error);
  }
  return PEER_CUDA_STATUS_OK;
}

}  // namespace peer_cuda

extern "C" PEER_CUDA_API int peer_cuda_abi_version(void) { return PEER_CUDA_ABI_VERSION; }

extern "C" PEER_CUDA_API const char* peer_cuda_last_error(void) { return peer_cuda::last_error.c_str(); }
