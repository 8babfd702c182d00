// Host side shared by the peer_native_cuda sources: status reporting and launch checks.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "device_common.cuh"
#include "peer_native_cuda.h"

namespace peer_cuda {

// Sets the calling thread's peer_cuda_last_error() message and returns `status`.
int set_error(int status, const std::string& message);

inline int invalid_argument(const std::string& message) { return set_error(PEER_CUDA_STATUS_INVALID_ARGUMENT, message); }

// "fn: call: cudaErrorName (description)" as a CUDA error status.
inline int cuda_failure(const char* fn, const char* call, cudaError_t error) {
  return set_error(PEER_CUDA_STATUS_CUDA_ERROR, std::string(fn) + ": " + call + ": " + cudaGetErrorName(error) + " (" +
                                                    cudaGetErrorString(error) + ")");
}

// Reports a failed launch (bad configuration, or an earlier asynchronous fault still pending).
inline int check_launch(const char* fn) {
  cudaError_t error = cudaGetLastError();
  return error == cudaSuccess ? PEER_CUDA_STATUS_OK : cuda_failure(fn, "kernel launch", error);
}

inline cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

// Most dynamic shared memory a block may opt in to on the current device; `fn` names the caller in errors.
int shared_memory_limit(const char* fn, size_t* bytes);

// Lets `kernel` use `bytes` of dynamic shared memory: fails (invalid argument) above the device
// limit, and raises the kernel's attribute when above the 48 KiB available without opting in.
int reserve_shared_memory(const char* fn, const void* kernel, size_t bytes);

}  // namespace peer_cuda
