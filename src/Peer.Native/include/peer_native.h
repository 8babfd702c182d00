/* C ABI of libpeer_native: CPU kernels of the PEER layer (arXiv 2407.04153), called from .NET by P/Invoke
   (src/Microsoft.ML.Peer/Native/PeerNativeMethods.cs). All tensors are dense row-major float32 / int64 with no
   alignment requirement; outputs must not overlap inputs. Every function validates its arguments, returns a PEER_*
   status, and on failure leaves a message for peer_last_error(). Functions are thread-safe: concurrent calls on
   different outputs are fine, and each call spreads its own work over peer_set_num_threads() threads.
   Results do not depend on the thread count. */
#ifndef PEER_NATIVE_H
#define PEER_NATIVE_H

#include <stdint.h>

#if defined(_WIN32)
#define PEER_API __declspec(dllexport)
#else
#define PEER_API __attribute__((visibility("default")))
#endif

#define PEER_OK 0
#define PEER_INVALID_ARGUMENT 1
#define PEER_UNSUPPORTED 2
#define PEER_CUDA_ERROR 3
#define PEER_INTERNAL_ERROR 4

#ifdef __cplusplus
extern "C" {
#endif

/* Returns 3; bumped whenever a signature or meaning below changes or an entry point is added (3: the bf16 expert
   kernels, peer_sparse_adamw_bf16 and peer_unique_rows). */
PEER_API int peer_abi_version(void);

/* Message of the last call on this thread that did not return PEER_OK ("" if none has failed). Successful calls leave
   it unchanged. The pointer stays valid until the next failing call on this thread. */
PEER_API const char* peer_last_error(void);

/* Threads each later call may use, process-wide; 0 (or negative) = the CPUs this process may run on (default);
   at most 256. Threads are started per call and end with it, so nothing keeps running between calls. */
PEER_API void peer_set_num_threads(int threads);

/* Exact product-key top-k. queries [R, key_dim]; sub_keys [2, n, key_dim/2] (half 0 scores the first half of the
   query, half 1 the second). Key i = a*n+b scores q1·sub_keys[0][a] + q2·sub_keys[1][b]. Writes the k best per row,
   scores descending (ties: smaller index first) and their indices. Equal to brute force over all n² keys (on the
   float32 sums of the computed half scores; NaN scores rank as -inf). */
PEER_API int peer_product_key_topk_f32(const float* queries, const float* sub_keys, int64_t rows, int64_t n,
                                       int64_t key_dim, int64_t k, float* out_scores, int64_t* out_indices);

/* Same, from precomputed sub-key scores s1 [R, n], s2 [R, n] (for callers that compute them with a BLAS GEMM). */
PEER_API int peer_cartesian_topk_f32(const float* s1, const float* s2, int64_t rows, int64_t n, int64_t k,
                                     float* out_scores, int64_t* out_indices);

/* Backward of the scores of selected keys: score[r,j] = q1[r]·sub_keys[0][a] + q2[r]·sub_keys[1][b] for
   indices[r,j] = a*n+b. Given dscores [R, k], writes dqueries [R, key_dim] and dsub_keys [2, n, key_dim/2]
   (overwritten; rows never selected get zeros). O(R·k·key_dim): no [R, n] work. */
PEER_API int peer_selected_key_backward_f32(const float* queries, const float* sub_keys, const int64_t* indices,
                                            const float* dscores, int64_t rows, int64_t n, int64_t key_dim, int64_t k,
                                            float* dqueries, float* dsub_keys);

/* Fused expert forward. x [T, d]; gates [T, m]; indices [T, m] in [0, N); U, V [N, d].
   hidden[t,j] = U[idx]·x[t] (pre-activation, saved for backward);
   y[t] = sum_j gates[t,j] * act(hidden[t,j]) * V[idx]. activation: 0 = GELU (exact, erf), 1 = ReLU. */
PEER_API int peer_expert_forward_f32(const float* x, const float* gates, const int64_t* indices, const float* U,
                                     const float* V, int64_t T, int64_t m, int64_t d, int64_t N, int activation,
                                     float* y, float* hidden);

/* Fused expert backward, given dy [T, d] and the forward's hidden [T, m]. slot_to_row [T*m] maps each slot to its
   expert's position in a sorted unique list of unique_count experts (torch.unique(..., return_inverse=True)).
   dx [T,d]; dgates [T,m] = act(hidden)·(V[idx]·dy[t]);
   dU_rows [unique_count, d]: row r = sum over slots mapped to r of gates*act'(hidden)*(V[idx]·dy[t]) * x[t];
   dV_rows [unique_count, d]: row r = sum over slots mapped to r of gates*act(hidden) * dy[t];
   dx[t] = sum_j gates*act'(hidden)*(V[idx]·dy[t]) * U[idx]. All outputs are overwritten. */
PEER_API int peer_expert_backward_f32(const float* x, const float* gates, const int64_t* indices, const float* U,
                                      const float* V, const float* hidden, const float* dy, const int64_t* slot_to_row,
                                      int64_t unique_count, int64_t T, int64_t m, int64_t d, int64_t N, int activation,
                                      float* dx, float* dgates, float* dU_rows, float* dV_rows);

/* The same two kernels over expert tables stored in bfloat16 (U, V [N, d] of uint16_t, each the upper 16 bits of an
   IEEE float: half the bytes per row read). Rows are widened to fp32 exactly and every product and sum is in fp32, in
   the fp32 kernels' order, so the results equal the fp32 kernels' on tables holding the same (bf16-representable)
   values. Gradients (dU_rows, dV_rows) are fp32. */
PEER_API int peer_expert_forward_bf16(const float* x, const float* gates, const int64_t* indices, const uint16_t* U,
                                      const uint16_t* V, int64_t T, int64_t m, int64_t d, int64_t N, int activation,
                                      float* y, float* hidden);
PEER_API int peer_expert_backward_bf16(const float* x, const float* gates, const int64_t* indices, const uint16_t* U,
                                       const uint16_t* V, const float* hidden, const float* dy,
                                       const int64_t* slot_to_row, int64_t unique_count, int64_t T, int64_t m,
                                       int64_t d, int64_t N, int activation, float* dx, float* dgates, float* dU_rows,
                                       float* dV_rows);

/* The sorted unique values of indices [count] (each in [0, N)) and each one's position among them: rows receives the
   unique_count unique values ascending (rows must hold count values), inverse [count] the position of indices[i] in
   rows. The same as torch.unique(indices, sorted=True, return_inverse=True); O(count + N/64) with N/8 bytes of scratch.
   The expert backward's slot_to_row and the rows its gradients belong to. */
PEER_API int peer_unique_rows(const int64_t* indices, int64_t count, int64_t N, int64_t* rows, int64_t* inverse,
                              int64_t* unique_count);

/* Row-sparse AdamW on an [N, d] table: only `rows` (strictly increasing) are updated, each with its own step count
   row_steps[row] (incremented here) for bias correction:
   g = grad_scale * row_grads[i]; p *= (1 - lr*weight_decay); m = b1*m + (1-b1)g; v = b2*v + (1-b2)g²;
   p -= lr * (m/(1-b1^s)) / (sqrt(v/(1-b2^s)) + eps). row_grads [count, d]. */
PEER_API int peer_sparse_adamw_f32(float* param, float* exp_avg, float* exp_avg_sq, int64_t* row_steps, int64_t N,
                                   int64_t d, const int64_t* rows, const float* row_grads, int64_t count, float lr,
                                   float beta1, float beta2, float eps, float weight_decay, float grad_scale);

/* The same update on a table and moments stored in bfloat16 (param, exp_avg, exp_avg_sq [N, d] of uint16_t, each the
   upper 16 bits of an IEEE float); same checks, step counts and bias corrections. Each touched element's p, m, v are
   widened to fp32 exactly and updated in fp32 as peer_sparse_adamw_f32 does, then each is stored back with stochastic
   rounding: a 16-bit random r is added to the float's bit pattern and the upper 16 bits kept, so a finite value rounds
   up in magnitude with probability equal to the discarded fraction (unbiased; small updates are not lost). NaN is
   stored as the quiet NaN 0x7FC0 with its sign, Inf as Inf. With mix32(x) the hash x ^= x>>16; x *= 0x7feb352d;
   x ^= x>>15; x *= 0x846ca68b; x ^= x>>16 on uint32: key = mix32(lo32(seed) ^ mix32(hi32(seed) ^ mix32(lo32(row) ^
   mix32(lo32(step))))) with step the row's new count, h = mix32(key ^ lo32(c)) for column c, and r = h & 0xFFFF for
   param, h >> 16 for exp_avg, lo32(h * 0x9E3779B1) >> 16 for exp_avg_sq (one hash per element serves all three):
   results depend only on the inputs and seed, not on the thread count. */
PEER_API int peer_sparse_adamw_bf16(uint16_t* param, uint16_t* exp_avg, uint16_t* exp_avg_sq, int64_t* row_steps,
                                    int64_t N, int64_t d, const int64_t* rows, const float* row_grads, int64_t count,
                                    float lr, float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                                    uint64_t seed);

/* Advice for storage read at random rows for a long time (the expert tables U, V and their optimizer moments): on
   Linux with transparent huge pages not disabled, marks the whole 2 MiB pages inside [ptr, ptr + bytes) for huge
   pages (madvise MADV_HUGEPAGE) and collapses the pages already present into huge pages now (MADV_COLLAPSE, Linux
   6.1+), so that random row reads pay far fewer TLB misses. Contents are unchanged. Advice only: where it does not
   apply (other systems, THP set to never, older kernels, no free huge pages, ranges under 2 MiB) nothing changes and
   PEER_OK is still returned. advised_bytes (may be null) receives the bytes advised (0 where nothing was); how many
   of them are huge pages is up to the kernel (AnonHugePages in /proc/self/smaps). */
PEER_API int peer_advise_hugepages(void* ptr, int64_t bytes, int64_t* advised_bytes);

#ifdef __cplusplus
}
#endif

#endif /* PEER_NATIVE_H */
