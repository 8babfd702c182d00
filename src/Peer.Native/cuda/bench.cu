// Times peer_native_cuda at the target PEER shape: retrieval (product-key top-k, and the selection alone from
// precomputed half scores) and the fused expert forward/backward. Median of 20 timed runs after 3 warm-ups, measured
// with CUDA events on the default stream; expert-row traffic is compared with the device's theoretical bandwidth.
//
//   peer_native_cuda_bench [T=2048] [N=1048576] [d=256] [h=8] [k=16] [key_dim=128] [activation=0]
//
// Expert rows are gathered at random (uniform indices), the worst case for the memory system.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "peer_native_cuda.h"

namespace {

void check(cudaError_t error, const char* what) {
  if (error != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(error));
    std::exit(1);
  }
}

void check_status(int status, const char* what) {
  if (status != PEER_CUDA_STATUS_OK) {
    std::fprintf(stderr, "%s failed (%d): %s\n", what, status, peer_cuda_last_error());
    std::exit(1);
  }
}

// Uniform values in [-scale, scale) from a hash of the position, so filling 2 GiB takes milliseconds.
__global__ void fill_uniform(float* out, size_t count, unsigned seed, float scale) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    unsigned long long z = (i + 1) * 0x9E3779B97F4A7C15ull + seed;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    out[i] = (static_cast<float>(z >> 40) * 0x1p-24f * 2.0f - 1.0f) * scale;
  }
}

template <class T>
T* device_alloc(size_t count) {
  T* p = nullptr;
  check(cudaMalloc(reinterpret_cast<void**>(&p), count * sizeof(T)), "cudaMalloc");
  return p;
}

float* device_uniform(size_t count, unsigned seed, float scale) {
  float* p = device_alloc<float>(count);
  fill_uniform<<<1024, 256>>>(p, count, seed, scale);
  check(cudaGetLastError(), "fill_uniform");
  return p;
}

template <class T>
T* device_copy(const std::vector<T>& host) {
  T* p = device_alloc<T>(host.size());
  check(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  return p;
}

// Median milliseconds of `runs` calls of fn, each bracketed by events on the default stream.
double median_ms(const std::function<void()>& fn, int warmup = 3, int runs = 20) {
  for (int i = 0; i < warmup; ++i) fn();
  check(cudaDeviceSynchronize(), "warm-up");
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<double> times;
  for (int i = 0; i < runs; ++i) {
    check(cudaEventRecord(start, nullptr), "cudaEventRecord");
    fn();
    check(cudaEventRecord(stop, nullptr), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return runs % 2 ? times[runs / 2] : 0.5 * (times[runs / 2 - 1] + times[runs / 2]);
}

long long arg(int argc, char** argv, const char* name, long long fallback) {
  const size_t length = std::strlen(name);
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], name, length) == 0 && argv[i][length] == '=') return std::atoll(argv[i] + length + 1);
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const long long T = arg(argc, argv, "T", 2048), N = arg(argc, argv, "N", 1 << 20), d = arg(argc, argv, "d", 256);
  const long long h = arg(argc, argv, "h", 8), k = arg(argc, argv, "k", 16), key_dim = arg(argc, argv, "key_dim", 128);
  const int activation = static_cast<int>(arg(argc, argv, "activation", PEER_CUDA_ACTIVATION_GELU));
  const long long n = std::llround(std::sqrt(static_cast<double>(N)));
  if (n * n != N) {
    std::fprintf(stderr, "N must be a perfect square (n*n product keys), got %lld\n", N);
    return 1;
  }
  const long long rows = T * h, m = h * k;

  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  // memoryClockRate is in kHz; DDR moves data on both clock edges.
  const double peak_gbs = 2.0 * prop.memoryClockRate * 1e3 * (prop.memoryBusWidth / 8.0) / 1e9;
  std::printf("device: %s (sm_%d%d, %d SMs), theoretical memory bandwidth %.0f GB/s\n", prop.name, prop.major,
              prop.minor, prop.multiProcessorCount, peak_gbs);
  std::printf("shape: T=%lld N=%lld (n=%lld) d=%lld h=%lld k=%lld key_dim=%lld activation=%s; median of 20\n", T, N, n,
              d, h, k, key_dim, activation == PEER_CUDA_ACTIVATION_GELU ? "gelu" : "relu");

  // Retrieval: T*h query rows against one pair of sub-key tables.
  float* queries = device_uniform(static_cast<size_t>(rows * key_dim), 1, 1.0f);
  float* sub_keys = device_uniform(static_cast<size_t>(2 * n * (key_dim / 2)), 2, 1.0f);
  float* s1 = device_uniform(static_cast<size_t>(rows * n), 3, 4.0f);
  float* s2 = device_uniform(static_cast<size_t>(rows * n), 4, 4.0f);
  float* top_scores = device_alloc<float>(static_cast<size_t>(rows * k));
  int64_t* top_indices = device_alloc<int64_t>(static_cast<size_t>(rows * k));

  const double topk_ms = median_ms([&] {
    check_status(peer_cuda_product_key_topk_f32(queries, sub_keys, rows, n, key_dim, k, top_scores, top_indices,
                                                nullptr),
                 "peer_cuda_product_key_topk_f32");
  });
  const double cartesian_ms = median_ms([&] {
    check_status(peer_cuda_cartesian_topk_f32(s1, s2, rows, n, k, top_scores, top_indices, nullptr),
                 "peer_cuda_cartesian_topk_f32");
  });
  std::printf("product_key_topk   %9.3f ms  (%lld rows, %.1f M rows/s)\n", topk_ms, rows, rows / topk_ms / 1e3);
  std::printf("  cartesian_topk   %9.3f ms  (selection only, from precomputed half scores)\n", cartesian_ms);

  // Experts: m = h*k slots per token, uniform random experts.
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<long long> pick(0, N - 1);
  std::vector<int64_t> indices(static_cast<size_t>(T * m));
  for (auto& e : indices) e = pick(rng);
  std::vector<int64_t> unique = indices;
  std::sort(unique.begin(), unique.end());
  unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
  std::vector<int64_t> slot_to_row;
  slot_to_row.reserve(indices.size());
  for (int64_t e : indices) slot_to_row.push_back(std::lower_bound(unique.begin(), unique.end(), e) - unique.begin());
  const long long unique_count = static_cast<long long>(unique.size());

  float* U = device_uniform(static_cast<size_t>(N * d), 5, 0.0625f);
  float* V = device_uniform(static_cast<size_t>(N * d), 6, 0.0625f);
  float* x = device_uniform(static_cast<size_t>(T * d), 7, 1.0f);
  float* gates = device_uniform(static_cast<size_t>(T * m), 8, 1.0f);
  float* dy = device_uniform(static_cast<size_t>(T * d), 9, 1.0f);
  int64_t* d_indices = device_copy(indices);
  int64_t* d_slot_to_row = device_copy(slot_to_row);
  float* y = device_alloc<float>(static_cast<size_t>(T * d));
  float* hidden = device_alloc<float>(static_cast<size_t>(T * m));
  float* dx = device_alloc<float>(static_cast<size_t>(T * d));
  float* dgates = device_alloc<float>(static_cast<size_t>(T * m));
  float* dU_rows = device_alloc<float>(static_cast<size_t>(unique_count * d));
  float* dV_rows = device_alloc<float>(static_cast<size_t>(unique_count * d));
  check(cudaDeviceSynchronize(), "setup");

  const double row_bytes = static_cast<double>(T) * m * d * sizeof(float);  // one expert row per slot
  const double forward_ms = median_ms([&] {
    check_status(peer_cuda_expert_forward_f32(x, gates, d_indices, U, V, T, m, d, N, activation, y, hidden, nullptr),
                 "peer_cuda_expert_forward_f32");
  });
  const double backward_ms = median_ms([&] {
    check_status(peer_cuda_expert_backward_f32(x, gates, d_indices, U, V, hidden, dy, d_slot_to_row, unique_count, T, m,
                                               d, N, activation, dx, dgates, dU_rows, dV_rows, nullptr),
                 "peer_cuda_expert_backward_f32");
  });
  // Forward reads the U and V row of every slot; backward reads both and adds into a dU and a dV row.
  const double forward_gbs = 2 * row_bytes / (forward_ms * 1e-3) / 1e9;
  const double backward_gbs = 4 * row_bytes / (backward_ms * 1e-3) / 1e9;
  std::printf("expert_forward     %9.3f ms  %7.0f GB/s of expert rows (%.0f%% of peak; 2 rows/slot, %lld slots)\n",
              forward_ms, forward_gbs, 100 * forward_gbs / peak_gbs, T * m);
  std::printf("expert_backward    %9.3f ms  %7.0f GB/s of expert rows (%.0f%% of peak; 2 read + 2 accumulated "
              "rows/slot, %lld unique experts)\n",
              backward_ms, backward_gbs, 100 * backward_gbs / peak_gbs, unique_count);

  for (void* p : {static_cast<void*>(queries), static_cast<void*>(sub_keys), static_cast<void*>(s1),
                  static_cast<void*>(s2), static_cast<void*>(top_scores), static_cast<void*>(top_indices),
                  static_cast<void*>(U), static_cast<void*>(V), static_cast<void*>(x), static_cast<void*>(gates),
                  static_cast<void*>(dy), static_cast<void*>(d_indices), static_cast<void*>(d_slot_to_row),
                  static_cast<void*>(y), static_cast<void*>(hidden), static_cast<void*>(dx), static_cast<void*>(dgates),
                  static_cast<void*>(dU_rows), static_cast<void*>(dV_rows)})
    cudaFree(p);
  return 0;
}
