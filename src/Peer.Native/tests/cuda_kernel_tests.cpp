// Checks peer_native_cuda against the same seeded vectors and references as the CPU tests (kernel_test_vectors.h),
// plus GPU-only cases for the code paths the small vectors do not reach (radix selection, the largest n and k, the
// brute-force fallback). Argument validation is checked first and needs no GPU; without a usable GPU the kernel
// checks are skipped and the exit code is 77, which CTest reports as skipped (SKIP_RETURN_CODE).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernel_test_vectors.h"
#include "peer_native_cuda.h"

namespace {

using namespace peer_test;

constexpr int kSkipped = 77;
constexpr double kRtol = 1e-4;  // float32 on both sides; the GPU's FMA and atomics change only the last bits
constexpr double kAtol = 1e-5;  // times max(1, max|expected|), as in check_close

int failures = 0;

void report(const std::string& name, const std::string& error) {
  if (error.empty()) {
    std::printf("ok   %s\n", name.c_str());
  } else {
    std::printf("FAIL %s: %s\n", name.c_str(), error.c_str());
    ++failures;
  }
}

void cuda_check(cudaError_t error, const char* what) {
  if (error != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(error));
}

// Throws with the library's message unless the call succeeded, then waits for the work and surfaces kernel faults.
void call_check(int status, const char* what) {
  if (status != PEER_CUDA_STATUS_OK)
    throw std::runtime_error(std::string(what) + " returned " + std::to_string(status) + ": " + peer_cuda_last_error());
  cuda_check(cudaDeviceSynchronize(), what);
}

template <class T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t count) : count_(count) {
    cuda_check(cudaMalloc(reinterpret_cast<void**>(&ptr_), std::max<size_t>(count, 1) * sizeof(T)), "cudaMalloc");
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) { upload(host); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(ptr_); }
  void upload(const std::vector<T>& host) {
    if (host.size() != count_) throw std::runtime_error("DeviceArray::upload: size mismatch");
    cuda_check(cudaMemcpy(ptr_, host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    cuda_check(cudaMemcpy(host.data(), ptr_, count_ * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    return host;
  }
  T* get() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
  size_t count_;
};

std::string close(const std::string& what, const std::vector<float>& got, const std::vector<double>& expected) {
  if (got.size() != expected.size()) return what + ": size mismatch";
  return check_close(what, got.data(), expected.data(), got.size(), kRtol, kAtol);
}

// Runs `body`, turning a thrown error into a failure of `name`.
template <class Body>
void run_case(const std::string& name, Body&& body) {
  try {
    report(name, body());
  } catch (const std::exception& e) {
    report(name, e.what());
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Argument validation: rejected on the host before anything touches the device, so no GPU is needed. The pointers
// are never dereferenced.
// ---------------------------------------------------------------------------------------------------------------

void validation_tests() {
  float* f = reinterpret_cast<float*>(uintptr_t{256});
  int64_t* i = reinterpret_cast<int64_t*>(uintptr_t{256});
  struct Case {
    const char* name;
    int status;
  };
  const Case cases[] = {
      {"topk.k_above_64", peer_cuda_product_key_topk_f32(f, f, 4, 100, 8, 65, f, i, nullptr)},
      {"topk.n_above_4096", peer_cuda_product_key_topk_f32(f, f, 4, 4097, 8, 4, f, i, nullptr)},
      {"topk.k_above_n", peer_cuda_product_key_topk_f32(f, f, 4, 8, 8, 9, f, i, nullptr)},
      {"topk.odd_key_dim", peer_cuda_product_key_topk_f32(f, f, 4, 8, 7, 2, f, i, nullptr)},
      {"topk.no_rows", peer_cuda_product_key_topk_f32(f, f, 0, 8, 8, 2, f, i, nullptr)},
      {"topk.null_queries", peer_cuda_product_key_topk_f32(nullptr, f, 4, 8, 8, 2, f, i, nullptr)},
      {"cartesian.k_zero", peer_cuda_cartesian_topk_f32(f, f, 4, 8, 0, f, i, nullptr)},
      {"cartesian.null_s2", peer_cuda_cartesian_topk_f32(f, nullptr, 4, 8, 2, f, i, nullptr)},
      {"forward.bad_activation", peer_cuda_expert_forward_f32(f, f, i, f, f, 2, 3, 4, 5, 2, f, f, nullptr)},
      {"forward.no_tokens", peer_cuda_expert_forward_f32(f, f, i, f, f, 0, 3, 4, 5, 0, f, f, nullptr)},
      {"forward.null_x", peer_cuda_expert_forward_f32(nullptr, f, i, f, f, 2, 3, 4, 5, 0, f, f, nullptr)},
      {"backward.unique_count_zero",
       peer_cuda_expert_backward_f32(f, f, i, f, f, f, f, i, 0, 2, 3, 4, 5, 0, f, f, f, f, nullptr)},
      {"backward.unique_count_above_N",
       peer_cuda_expert_backward_f32(f, f, i, f, f, f, f, i, 6, 2, 3, 4, 5, 0, f, f, f, f, nullptr)},
      {"backward.null_dV_rows",
       peer_cuda_expert_backward_f32(f, f, i, f, f, f, f, i, 2, 2, 3, 4, 5, 0, f, f, f, nullptr, nullptr)},
      {"adamw.beta1_one", peer_cuda_sparse_adamw_f32(f, f, f, i, 8, 4, i, f, 2, 0.1f, 1.0f, 0.9f, 1e-8f, 0, 1, nullptr)},
      {"adamw.count_above_N",
       peer_cuda_sparse_adamw_f32(f, f, f, i, 8, 4, i, f, 9, 0.1f, 0.9f, 0.9f, 1e-8f, 0, 1, nullptr)},
      {"adamw.lr_nan", peer_cuda_sparse_adamw_f32(f, f, f, i, 8, 4, i, f, 2, std::numeric_limits<float>::quiet_NaN(),
                                                  0.9f, 0.9f, 1e-8f, 0, 1, nullptr)},
  };
  for (const Case& c : cases) {
    std::string error;
    if (c.status != PEER_CUDA_STATUS_INVALID_ARGUMENT)
      error = "status " + std::to_string(c.status) + ", expected 1 (invalid argument)";
    else if (std::string(peer_cuda_last_error()).find("peer_cuda_") != 0)
      error = std::string("message does not name the function: ") + peer_cuda_last_error();
    report(std::string("validation.") + c.name, error);
  }
  report("validation.abi_version",
         peer_cuda_abi_version() == PEER_CUDA_ABI_VERSION ? "" : "peer_cuda_abi_version() mismatch");
}

// ---------------------------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------------------------

std::string run_product_key(const ProductKeyCase& c) {
  DeviceArray<float> queries(c.queries), sub_keys(c.sub_keys), scores(static_cast<size_t>(c.rows * c.k));
  DeviceArray<int64_t> indices(static_cast<size_t>(c.rows * c.k));
  call_check(peer_cuda_product_key_topk_f32(queries.get(), sub_keys.get(), c.rows, c.n, c.key_dim, c.k, scores.get(),
                                            indices.get(), nullptr),
             "peer_cuda_product_key_topk_f32");
  const std::vector<float> got_scores = scores.download();
  const std::vector<int64_t> got_indices = indices.download();
  return check_topk(c, got_scores.data(), got_indices.data(), kRtol);
}

std::string run_cartesian(const CartesianCase& c) {
  DeviceArray<float> s1(c.s1), s2(c.s2), scores(static_cast<size_t>(c.rows * c.k));
  DeviceArray<int64_t> indices(static_cast<size_t>(c.rows * c.k));
  call_check(peer_cuda_cartesian_topk_f32(s1.get(), s2.get(), c.rows, c.n, c.k, scores.get(), indices.get(), nullptr),
             "peer_cuda_cartesian_topk_f32");
  const std::vector<float> got_scores = scores.download();
  const std::vector<int64_t> got_indices = indices.download();
  return check_topk(c, got_scores.data(), got_indices.data());
}

// Forward and backward on a stream of their own (the kernels must honour `stream`, not only the default one).
std::string run_experts(const ExpertCase& c, cudaStream_t stream) {
  const size_t td = static_cast<size_t>(c.T * c.d), tm = static_cast<size_t>(c.T * c.m);
  const size_t rows = static_cast<size_t>(c.unique_count * c.d);
  DeviceArray<float> x(c.x), gates(c.gates), U(c.U), V(c.V), dy(c.dy), hidden_in(c.hidden_in);
  DeviceArray<int64_t> indices(c.indices), slot_to_row(c.slot_to_row);
  DeviceArray<float> y(td), hidden(tm), dx(td), dgates(tm), dU_rows(rows), dV_rows(rows);
  // Backward must overwrite its outputs, so start them dirty.
  dU_rows.upload(std::vector<float>(rows, 123.0f));
  dV_rows.upload(std::vector<float>(rows, -7.0f));
  // Pageable uploads may still be in flight, and a non-blocking stream does not wait for the default stream.
  cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");

  call_check(peer_cuda_expert_forward_f32(x.get(), gates.get(), indices.get(), U.get(), V.get(), c.T, c.m, c.d, c.N,
                                          c.activation, y.get(), hidden.get(), stream),
             "peer_cuda_expert_forward_f32");
  std::string error = close(c.name + ".hidden", hidden.download(), c.hidden);
  if (error.empty()) error = close(c.name + ".y", y.download(), c.y);
  if (!error.empty()) return error;

  call_check(peer_cuda_expert_backward_f32(x.get(), gates.get(), indices.get(), U.get(), V.get(), hidden_in.get(),
                                           dy.get(), slot_to_row.get(), c.unique_count, c.T, c.m, c.d, c.N,
                                           c.activation, dx.get(), dgates.get(), dU_rows.get(), dV_rows.get(), stream),
             "peer_cuda_expert_backward_f32");
  for (std::string e : {close(c.name + ".dx", dx.download(), c.dx), close(c.name + ".dgates", dgates.download(), c.dgates),
                        close(c.name + ".dU_rows", dU_rows.download(), c.dU_rows),
                        close(c.name + ".dV_rows", dV_rows.download(), c.dV_rows)})
    if (!e.empty()) return e;
  return "";
}

std::string run_adamw(const AdamwCase& c) {
  DeviceArray<float> param(c.param), exp_avg(c.exp_avg), exp_avg_sq(c.exp_avg_sq);
  DeviceArray<int64_t> row_steps(c.row_steps);
  for (const AdamwStep& step : c.steps) {
    DeviceArray<int64_t> rows(step.rows);
    DeviceArray<float> grads(step.grads);
    call_check(peer_cuda_sparse_adamw_f32(param.get(), exp_avg.get(), exp_avg_sq.get(), row_steps.get(), c.N, c.d,
                                          rows.get(), grads.get(), static_cast<int64_t>(step.rows.size()), step.lr,
                                          step.beta1, step.beta2, step.eps, step.weight_decay, step.grad_scale, nullptr),
               "peer_cuda_sparse_adamw_f32");
  }
  const std::vector<int64_t> steps = row_steps.download();
  for (std::string e : {close(c.name + ".param", param.download(), c.expected_param),
                        close(c.name + ".exp_avg", exp_avg.download(), c.expected_exp_avg),
                        close(c.name + ".exp_avg_sq", exp_avg_sq.download(), c.expected_exp_avg_sq),
                        check_equal(c.name + ".row_steps", steps.data(), c.expected_row_steps.data(), steps.size())})
    if (!e.empty()) return e;
  return "";
}

// One half's scores packed within 2^-20 of each other while the other half is large: every excluded entry could
// collapse onto a kept one, far more than the GPU's extension lists hold, so rows take the brute-force path.
CartesianCase brute_force_fallback_case() {
  CartesianCase c;
  c.name = "gpu_brute_force_fallback";
  c.rows = 3, c.n = 100, c.k = 10;
  c.rounding_ties = true;
  Rng rng(601);
  for (int64_t r = 0; r < c.rows; ++r)
    for (int64_t a = 0; a < c.n; ++a) c.s1.push_back(1.0f + static_cast<float>((a * 37 + r) % c.n) * 0x1p-23f);
  for (int64_t i = 0; i < c.rows * c.n; ++i) c.s2.push_back(1024.0f + rng.symmetric(16.0f));
  finish_cartesian(c);
  return c;
}

}  // namespace

int main() {
  validation_tests();

  int devices = 0;
  const cudaError_t probe = cudaGetDeviceCount(&devices);
  if (probe != cudaSuccess || devices == 0) {
    std::printf("SKIP kernel checks: no usable CUDA device (%s)\n",
                probe != cudaSuccess ? cudaGetErrorString(probe) : "device count 0");
    return failures ? 1 : kSkipped;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
    std::printf("device 0: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);

  for (const ProductKeyCase& c : product_key_cases()) run_case("product_key." + c.name, [&] { return run_product_key(c); });
  // GPU-only shapes: 8 rows per block with a partial last block, k = 64 (radix selection), and n = 4096.
  for (const ProductKeyCase& c : {make_product_key_case("gpu_radix_k64", 501, 19, 1024, 16, 64),
                                  make_product_key_case("gpu_max_n_and_k", 502, 2, 4096, 8, 64)})
    run_case("product_key." + c.name, [&] { return run_product_key(c); });

  for (const CartesianCase& c : cartesian_cases()) run_case("cartesian." + c.name, [&] { return run_cartesian(c); });
  for (const CartesianCase& c : {brute_force_fallback_case(), make_cartesian_case("gpu_max_n_and_k", 503, 3, 4096, 64)})
    run_case("cartesian." + c.name, [&] { return run_cartesian(c); });

  cudaStream_t stream = nullptr;
  try {
    cuda_check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    for (const ExpertCase& c : expert_cases()) run_case("experts." + c.name, [&] { return run_experts(c, stream); });
    cuda_check(cudaStreamDestroy(stream), "cudaStreamDestroy");
  } catch (const std::exception& e) {
    report("experts.stream", e.what());
  }

  for (const AdamwCase& c : adamw_cases()) run_case("adamw." + c.name, [&] { return run_adamw(c); });

  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}
