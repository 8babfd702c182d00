// Product-key retrieval on the GPU, with the CPU kernel's contract (cpu/retrieval.cpp): the top k of the n*n keys
// a*n+b by the float32 sum s1[a] + s2[b] of the half scores, score descending then index ascending, NaN ranking (and
// reported) as -inf; equal to brute force over those float sums.
//
// One warp per query row. Each half's top k is combined with the other's; that is exact in real arithmetic, and the
// float cases where rounding makes s1[a'] + s2[b] == s1[a] + s2[b] for s1[a'] > s1[a] are covered as on the CPU: each
// half's list is extended by the excluded entries that could tie a kept one that way (see extend_for_collapses in
// cpu/retrieval.cpp for the proof). If a half needs more than kExtra such entries, which takes many scores within
// 2^-20 of each other or infinite scores, the row falls back to brute force over all n*n sums.
//
// Selection ranks unique 64-bit keys (order-preserving score bits, then the complemented index), so the order above
// is plain integer order. A lower bound from each lane's best two keys usually leaves at most 64 candidates, which one
// 64-wide bitonic sort in registers finishes; otherwise an 8-bit radix select finds the exact k-th key.
//
// peer_cuda_product_key_topk_f32 scores the sub-keys itself (a block scores RPB rows at once, so each sub-key row is
// read once per block); peer_cuda_cartesian_topk_f32 takes precomputed half scores (e.g. from a cuBLAS GEMM).
#include "common.cuh"
#include "retrieval_kernels.cuh"

#include <climits>

namespace peer_cuda {
namespace {

// Rows per block: the most (up to the row count) that leave room for two blocks per SM, else the most that fit.
int choose_rows_per_block(const char* fn, long long rows, int n, int key_dim, int k, int* rpb) {
  size_t limit = 0;
  const int status = shared_memory_limit(fn, &limit);
  if (status != PEER_CUDA_STATUS_OK) return status;
  const int options[] = {8, 4, 2, 1};
  for (size_t share : {limit / 2, limit})
    for (int option : options)
      if ((option == 1 || rows >= option) && topk_layout(option, n, key_dim, k).total <= share) {
        *rpb = option;
        return PEER_CUDA_STATUS_OK;
      }
  *rpb = 1;  // too large even alone: reserve_shared_memory reports it
  return PEER_CUDA_STATUS_OK;
}

template <class Kernel, class... Args>
int launch_rows(Kernel kernel, int rpb, long long rows, const TopkLayout& layout, cudaStream_t stream, const char* name,
                Args... args) {
  const int status = reserve_shared_memory(name, reinterpret_cast<const void*>(kernel), layout.total);
  if (status != PEER_CUDA_STATUS_OK) return status;
  const long long blocks = (rows + rpb - 1) / rpb;
  kernel<<<static_cast<unsigned>(blocks), rpb * 32, layout.total, stream>>>(args...);
  return check_launch(name);
}

template <int RPB>
int launch_product_key(bool vec, const float* queries, const float* sub_keys, long long rows, int n, int key_dim,
                       int k, float* out_scores, int64_t* out_indices, cudaStream_t stream) {
  const TopkLayout layout = topk_layout(RPB, n, key_dim, k);
  const char* name = "peer_cuda_product_key_topk_f32";
  return vec ? launch_rows(product_key_topk_kernel<RPB, true>, RPB, rows, layout, stream, name, queries, sub_keys, rows,
                           n, key_dim, k, layout, out_scores, out_indices)
             : launch_rows(product_key_topk_kernel<RPB, false>, RPB, rows, layout, stream, name, queries, sub_keys,
                           rows, n, key_dim, k, layout, out_scores, out_indices);
}

int launch_cartesian(int rpb, const float* s1, const float* s2, long long rows, int n, int k, float* out_scores,
                     int64_t* out_indices, cudaStream_t stream) {
  const TopkLayout layout = topk_layout(rpb, n, 0, k);
  return launch_rows(cartesian_topk_kernel, rpb, rows, layout, stream, "peer_cuda_cartesian_topk_f32", s1, s2, rows, n,
                     k, layout, out_scores, out_indices);
}

int check_topk_sizes(const char* fn, int64_t rows, int64_t n, int64_t k) {
  if (rows < 1 || rows > INT32_MAX) return invalid_argument(std::string(fn) + ": rows must be in [1, 2^31)");
  if (n < 1 || n > PEER_CUDA_TOPK_MAX_N)
    return invalid_argument(std::string(fn) + ": n must be in [1, 4096] on the GPU, got " + std::to_string(n));
  if (k < 1 || k > n || k > PEER_CUDA_TOPK_MAX_K)
    return invalid_argument(std::string(fn) + ": k must be in [1, min(n, 64)] on the GPU, got " + std::to_string(k));
  return PEER_CUDA_STATUS_OK;
}

}  // namespace
}  // namespace peer_cuda

extern "C" PEER_CUDA_API int peer_cuda_product_key_topk_f32(const float* queries, const float* sub_keys, int64_t rows,
                                                            int64_t n, int64_t key_dim, int64_t k, float* out_scores,
                                                            int64_t* out_indices, void* stream) {
  using namespace peer_cuda;
  const char* fn = "peer_cuda_product_key_topk_f32";
  if (queries == nullptr || sub_keys == nullptr || out_scores == nullptr || out_indices == nullptr)
    return invalid_argument(std::string(fn) + ": queries, sub_keys, out_scores and out_indices must not be null");
  if (key_dim < 2 || key_dim % 2 != 0 || key_dim > (1 << 16))
    return invalid_argument(std::string(fn) + ": key_dim must be even and in [2, 65536], got " + std::to_string(key_dim));
  int status = check_topk_sizes(fn, rows, n, k);
  if (status != PEER_CUDA_STATUS_OK) return status;

  const int in = static_cast<int>(n), ikd = static_cast<int>(key_dim), ik = static_cast<int>(k);
  int rpb = 1;
  status = choose_rows_per_block(fn, rows, in, ikd, ik, &rpb);
  if (status != PEER_CUDA_STATUS_OK) return status;
  const bool vec = (key_dim / 2) % 4 == 0 && reinterpret_cast<uintptr_t>(sub_keys) % 16 == 0;
  const cudaStream_t s = as_stream(stream);
  switch (rpb) {
    case 8: return launch_product_key<8>(vec, queries, sub_keys, rows, in, ikd, ik, out_scores, out_indices, s);
    case 4: return launch_product_key<4>(vec, queries, sub_keys, rows, in, ikd, ik, out_scores, out_indices, s);
    case 2: return launch_product_key<2>(vec, queries, sub_keys, rows, in, ikd, ik, out_scores, out_indices, s);
    default: return launch_product_key<1>(vec, queries, sub_keys, rows, in, ikd, ik, out_scores, out_indices, s);
  }
}

extern "C" PEER_CUDA_API int peer_cuda_cartesian_topk_f32(const float* s1, const float* s2, int64_t rows, int64_t n,
                                                          int64_t k, float* out_scores, int64_t* out_indices,
                                                          void* stream) {
  using namespace peer_cuda;
  const char* fn = "peer_cuda_cartesian_topk_f32";
  if (s1 == nullptr || s2 == nullptr || out_scores == nullptr || out_indices == nullptr)
    return invalid_argument(std::string(fn) + ": s1, s2, out_scores and out_indices must not be null");
  int status = check_topk_sizes(fn, rows, n, k);
  if (status != PEER_CUDA_STATUS_OK) return status;

  const int in = static_cast<int>(n), ik = static_cast<int>(k);
  int rpb = 1;
  status = choose_rows_per_block(fn, rows, in, 0, ik, &rpb);
  if (status != PEER_CUDA_STATUS_OK) return status;
  return launch_cartesian(rpb, s1, s2, rows, in, ik, out_scores, out_indices, as_stream(stream));
}
