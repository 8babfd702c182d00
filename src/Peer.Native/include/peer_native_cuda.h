/* CUDA versions of the peer_native kernels (peer_native.h), exported by the separate shared library peer_native_cuda,
 * which is built only where a CUDA compiler is found. Same semantics and status codes as the CPU functions of the same
 * name without "cuda_", except as noted here.
 *
 * Every array argument is a DEVICE pointer. `stream` is a cudaStream_t; NULL means the legacy default stream, where
 * TorchSharp launches its own work. Calls are asynchronous: they check arguments on the host, enqueue, check the launch
 * and return; a fault inside a kernel surfaces on a later synchronizing call.
 *
 * Status: 0 ok, 1 invalid argument, 3 CUDA error (also a pending error of earlier asynchronous work). After a non-zero
 * status peer_cuda_last_error() describes it (thread-local; "" until a call fails; successful calls leave it).
 *
 * Device-resident values are not validated, since that would need a synchronizing copy: a slot whose expert index is
 * outside [0, N) or whose slot_to_row entry is outside [0, unique_count), and an optimizer row outside [0, N), is
 * skipped (contributes nothing; its hidden and dgates are 0). Optimizer rows must be unique (the CPU requires strictly
 * increasing); duplicates race. */
#ifndef PEER_NATIVE_CUDA_H
#define PEER_NATIVE_CUDA_H

#include <stdint.h>

#if defined(_WIN32)
#  if defined(PEER_NATIVE_CUDA_BUILDING)
#    define PEER_CUDA_API __declspec(dllexport)
#  else
#    define PEER_CUDA_API __declspec(dllimport)
#  endif
#else
#  define PEER_CUDA_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define PEER_CUDA_ABI_VERSION 1

#define PEER_CUDA_STATUS_OK 0
#define PEER_CUDA_STATUS_INVALID_ARGUMENT 1
#define PEER_CUDA_STATUS_CUDA_ERROR 3

#define PEER_CUDA_ACTIVATION_GELU 0 /* exact GELU, x * Phi(x) with erf */
#define PEER_CUDA_ACTIVATION_RELU 1

/* Limits of the top-k functions on the GPU: a row's 2n half scores stay in shared memory and the k winners are sorted
 * inside one warp. */
#define PEER_CUDA_TOPK_MAX_K 64
#define PEER_CUDA_TOPK_MAX_N 4096

PEER_CUDA_API int peer_cuda_abi_version(void);

/* Message for the last failed call on this thread; never NULL. */
PEER_CUDA_API const char* peer_cuda_last_error(void);

/* queries [rows, key_dim]; sub_keys [2, n, key_dim/2]. Key i = a*n + b scores q[:key_dim/2]·sub_keys[0][a] +
 * q[key_dim/2:]·sub_keys[1][b]. Writes the top k per row, scores descending, ties to the smaller index, equal to brute
 * force over the float32 sums of the computed half scores (NaN ranks and is reported as -inf); the half scores
 * themselves use FMA, so they may differ from the CPU's in the last bit. out_scores/out_indices [rows, k].
 * Requires rows >= 1, key_dim even, 1 <= k <= min(n, 64), n <= 4096. */
PEER_CUDA_API int peer_cuda_product_key_topk_f32(const float* queries, const float* sub_keys, int64_t rows, int64_t n,
                                                 int64_t key_dim, int64_t k, float* out_scores, int64_t* out_indices,
                                                 void* stream);

/* Same from precomputed half scores s1, s2 [rows, n] (e.g. a cuBLAS GEMM of the query halves with the sub-keys). */
PEER_CUDA_API int peer_cuda_cartesian_topk_f32(const float* s1, const float* s2, int64_t rows, int64_t n, int64_t k,
                                               float* out_scores, int64_t* out_indices, void* stream);

/* x [T, d]; gates, indices [T, m]; U, V [N, d]. hidden[t, j] = U[indices[t, j]]·x[t] (saved for backward);
 * y[t] = sum_j gates[t, j] * act(hidden[t, j]) * V[indices[t, j]]. A slot whose coefficient gates*act(hidden) is
 * exactly 0 (ReLU off, zero gate) is skipped without reading its V row, so non-finite values there do not propagate. */
PEER_CUDA_API int peer_cuda_expert_forward_f32(const float* x, const float* gates, const int64_t* indices, const float* U,
                                               const float* V, int64_t T, int64_t m, int64_t d, int64_t N, int activation,
                                               float* y, float* hidden, void* stream);

/* Gradients of the forward above given dy [T, d] and its hidden. slot_to_row [T*m] maps each slot to its expert's row
 * in dU_rows/dV_rows [unique_count, d], which are zeroed and then accumulated with atomics (so the summation order,
 * and the last bits, vary from run to run); slots whose two coefficients are both 0 are skipped as in the forward:
 *   dgates[t, j] = act(h) * (V[e]·dy[t])
 *   dx[t]        = sum_j gates * act'(h) * (V[e]·dy[t]) * U[e]
 *   dU_rows[r]  += gates * act'(h) * (V[e]·dy[t]) * x[t]
 *   dV_rows[r]  += gates * act(h) * dy[t] */
PEER_CUDA_API int peer_cuda_expert_backward_f32(const float* x, const float* gates, const int64_t* indices, const float* U,
                                                const float* V, const float* hidden, const float* dy,
                                                const int64_t* slot_to_row, int64_t unique_count, int64_t T, int64_t m,
                                                int64_t d, int64_t N, int activation, float* dx, float* dgates,
                                                float* dU_rows, float* dV_rows, void* stream);

/* AdamW on the rows listed in rows[count] (unique) of param/exp_avg/exp_avg_sq [N, d], with
 * per-row step counts row_steps [N]: s = ++row_steps[row]; g = grad_scale * row_grads[i];
 * p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * p -= lr * (m / (1 - b1^s)) / (sqrt(v / (1 - b2^s)) + eps). */
PEER_CUDA_API int peer_cuda_sparse_adamw_f32(float* param, float* exp_avg, float* exp_avg_sq, int64_t* row_steps, int64_t N,
                                             int64_t d, const int64_t* rows, const float* row_grads, int64_t count, float lr,
                                             float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                                             void* stream);

#ifdef __cplusplus
}
#endif

#endif /* PEER_NATIVE_CUDA_H */
