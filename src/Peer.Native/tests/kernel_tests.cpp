// Checks the peer_native CPU kernels through their C ABI against the references in kernel_test_vectors.h.
// Usage: peer_native_tests [runtime|retrieval|experts|optimizer|validation|determinism]... (none = all); CTest runs
// one family per entry. Exit status 0 when every check passed.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "kernel_test_vectors.h"
#include "peer_native.h"

namespace {

using namespace peer_test;

int failures = 0;
int checks = 0;

void expect(bool ok, const std::string& what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

void expect_pass(const std::string& error) { expect(error.empty(), error); }

void expect_ok(int status, const std::string& call) {
  expect(status == PEER_OK, call + " returned " + std::to_string(status) + ": " + peer_last_error());
}

// ---------------------------------------------------------------------------------------------------------------

void test_runtime() {
  expect(peer_abi_version() == 2, "peer_abi_version() == 2");
  expect(std::strcmp(peer_last_error(), "") == 0, "peer_last_error() is empty before any failure");

  expect(peer_cartesian_topk_f32(nullptr, nullptr, 1, 1, 1, nullptr, nullptr) == PEER_INVALID_ARGUMENT,
         "a failing call returns PEER_INVALID_ARGUMENT");
  const std::string message = peer_last_error();
  expect(message.find("peer_cartesian_topk_f32") != std::string::npos, "message names the function: " + message);

  float s[2] = {1, 2}, out = 0;
  int64_t index = -1;
  expect_ok(peer_cartesian_topk_f32(s, s, 1, 2, 1, &out, &index), "cartesian 1x2");
  expect(message == peer_last_error(), "a successful call leaves the last failure's message");

  std::string other_thread;
  std::thread([&] {
    other_thread = peer_last_error();
    peer_product_key_topk_f32(nullptr, nullptr, 1, 1, 2, 1, nullptr, nullptr);
  }).join();
  expect(other_thread.empty(), "peer_last_error() is per thread (fresh thread sees \"\")");
  expect(message == peer_last_error(), "another thread's failure leaves this thread's message");

  float both[2];
  int64_t both_indices[2];
  for (int threads : {1, 3, 0, -4, 100000}) {
    peer_set_num_threads(threads);
    expect_ok(peer_cartesian_topk_f32(s, s, 1, 2, 2, both, both_indices),
              "cartesian with threads = " + std::to_string(threads));
    expect(both_indices[0] == 3 && both_indices[1] == 1 && both[0] == 4.0f, "top 2 of [1,2]+[1,2] is keys 3, 1");
  }
  peer_set_num_threads(0);
}

// ---------------------------------------------------------------------------------------------------------------

void test_retrieval() {
  for (const ProductKeyCase& c : product_key_cases()) {
    std::vector<float> scores(static_cast<size_t>(c.rows * c.k), std::numeric_limits<float>::quiet_NaN());
    std::vector<int64_t> indices(static_cast<size_t>(c.rows * c.k), -1);
    expect_ok(peer_product_key_topk_f32(c.queries.data(), c.sub_keys.data(), c.rows, c.n, c.key_dim, c.k, scores.data(),
                                        indices.data()),
              "product_key " + c.name);
    expect_pass(check_topk(c, scores.data(), indices.data()));

    // The same case through the cartesian entry point, from sub-key scores rounded to float.
    const int64_t h = c.key_dim / 2;
    std::vector<float> s1(static_cast<size_t>(c.rows * c.n)), s2(s1.size());
    for (int64_t r = 0; r < c.rows; ++r)
      for (int64_t a = 0; a < c.n; ++a) {
        double d1 = 0, d2 = 0;
        for (int64_t p = 0; p < h; ++p) {
          d1 += double(c.queries[static_cast<size_t>(r * c.key_dim + p)]) * c.sub_keys[static_cast<size_t>(a * h + p)];
          d2 += double(c.queries[static_cast<size_t>(r * c.key_dim + h + p)]) *
                c.sub_keys[static_cast<size_t>((c.n + a) * h + p)];
        }
        s1[static_cast<size_t>(r * c.n + a)] = static_cast<float>(d1);
        s2[static_cast<size_t>(r * c.n + a)] = static_cast<float>(d2);
      }
    expect_ok(peer_cartesian_topk_f32(s1.data(), s2.data(), c.rows, c.n, c.k, scores.data(), indices.data()),
              "cartesian from " + c.name);
    expect_pass(check_topk(c, scores.data(), indices.data()));
  }

  for (const CartesianCase& c : cartesian_cases()) {
    std::vector<float> scores(static_cast<size_t>(c.rows * c.k));
    std::vector<int64_t> indices(static_cast<size_t>(c.rows * c.k));
    expect_ok(peer_cartesian_topk_f32(c.s1.data(), c.s2.data(), c.rows, c.n, c.k, scores.data(), indices.data()),
              "cartesian " + c.name);
    expect_pass(check_topk(c, scores.data(), indices.data()));
  }
}

// ---------------------------------------------------------------------------------------------------------------

void test_experts() {
  for (const ExpertCase& c : expert_cases()) {
    std::vector<float> y(static_cast<size_t>(c.T * c.d), -7.0f), hidden(static_cast<size_t>(c.T * c.m), -7.0f);
    expect_ok(peer_expert_forward_f32(c.x.data(), c.gates.data(), c.indices.data(), c.U.data(), c.V.data(), c.T, c.m,
                                      c.d, c.N, c.activation, y.data(), hidden.data()),
              "expert_forward " + c.name);
    expect_pass(check_expert_forward(c, y.data(), hidden.data()));

    // Outputs start as garbage: the kernel must overwrite, not accumulate.
    std::vector<float> dx(static_cast<size_t>(c.T * c.d), 3.0f), dgates(static_cast<size_t>(c.T * c.m), 3.0f);
    std::vector<float> du(static_cast<size_t>(c.unique_count * c.d), 3.0f), dv(du.size(), 3.0f);
    expect_ok(peer_expert_backward_f32(c.x.data(), c.gates.data(), c.indices.data(), c.U.data(), c.V.data(),
                                       c.hidden_in.data(), c.dy.data(), c.slot_to_row.data(), c.unique_count, c.T, c.m,
                                       c.d, c.N, c.activation, dx.data(), dgates.data(), du.data(), dv.data()),
              "expert_backward " + c.name);
    expect_pass(check_expert_backward(c, dx.data(), dgates.data(), du.data(), dv.data()));
  }
}

void expect_invalid(const char* function, const std::string& needle, const std::function<int()>& call);

// Rounds to the nearest bfloat16, ties to even (what torch's .to(bfloat16) does for finite values).
uint16_t to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

float from_bf16(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// bf16 tables: on every expert case, the bf16 kernels equal the fp32 kernels run on the same tables widened to fp32,
// bit for bit (the fp32 kernels are checked against the double-precision references above).
void test_experts_bf16() {
  for (const ExpertCase& c : expert_cases()) {
    std::vector<uint16_t> u16(c.U.size()), v16(c.V.size());
    std::vector<float> uw(c.U.size()), vw(c.V.size());
    for (size_t i = 0; i < c.U.size(); ++i) uw[i] = from_bf16(u16[i] = to_bf16(c.U[i]));
    for (size_t i = 0; i < c.V.size(); ++i) vw[i] = from_bf16(v16[i] = to_bf16(c.V[i]));
    const size_t td = static_cast<size_t>(c.T * c.d), tm = static_cast<size_t>(c.T * c.m);
    std::vector<float> y32(td), h32(tm), y16(td, -7.0f), h16(tm, -7.0f);
    expect_ok(peer_expert_forward_f32(c.x.data(), c.gates.data(), c.indices.data(), uw.data(), vw.data(), c.T, c.m, c.d,
                                      c.N, c.activation, y32.data(), h32.data()),
              "expert_forward (widened bf16 tables) " + c.name);
    expect_ok(peer_expert_forward_bf16(c.x.data(), c.gates.data(), c.indices.data(), u16.data(), v16.data(), c.T, c.m,
                                       c.d, c.N, c.activation, y16.data(), h16.data()),
              "expert_forward_bf16 " + c.name);
    expect_pass(same_bits(y32, y16) && same_bits(h32, h16) ? "" : "bf16 forward differs from fp32 on the widened tables");

    const size_t ud = static_cast<size_t>(c.unique_count * c.d);
    std::vector<float> dx32(td), dg32(tm), du32(ud), dv32(ud), dx16(td, 3.0f), dg16(tm, 3.0f), du16(ud, 3.0f), dv16(ud, 3.0f);
    expect_ok(peer_expert_backward_f32(c.x.data(), c.gates.data(), c.indices.data(), uw.data(), vw.data(),
                                       c.hidden_in.data(), c.dy.data(), c.slot_to_row.data(), c.unique_count, c.T, c.m,
                                       c.d, c.N, c.activation, dx32.data(), dg32.data(), du32.data(), dv32.data()),
              "expert_backward (widened bf16 tables) " + c.name);
    expect_ok(peer_expert_backward_bf16(c.x.data(), c.gates.data(), c.indices.data(), u16.data(), v16.data(),
                                        c.hidden_in.data(), c.dy.data(), c.slot_to_row.data(), c.unique_count, c.T, c.m,
                                        c.d, c.N, c.activation, dx16.data(), dg16.data(), du16.data(), dv16.data()),
              "expert_backward_bf16 " + c.name);
    expect_pass(same_bits(dx32, dx16) && same_bits(dg32, dg16) && same_bits(du32, du16) && same_bits(dv32, dv16)
                    ? ""
                    : "bf16 backward differs from fp32 on the widened tables");
  }
  // The bf16 entry points validate like the fp32 ones and name themselves.
  const float f[1] = {0.0f};
  const int64_t i[1] = {0};
  const uint16_t b[1] = {0};
  float out[1];
  expect_invalid("peer_expert_forward_bf16", "U is null",
                 [&] { return peer_expert_forward_bf16(f, f, i, nullptr, b, 1, 1, 1, 1, 0, out, out); });
  expect_invalid("peer_expert_backward_bf16", "N must be positive, got 0",
                 [&] { return peer_expert_backward_bf16(f, f, i, b, b, f, f, i, 1, 1, 1, 1, 0, 0, out, out, out, out); });
}

// ---------------------------------------------------------------------------------------------------------------

void run_adamw(const AdamwCase& c, std::vector<float>& p, std::vector<float>& m, std::vector<float>& v,
               std::vector<int64_t>& steps) {
  p = c.param, m = c.exp_avg, v = c.exp_avg_sq, steps = c.row_steps;
  for (size_t i = 0; i < c.steps.size(); ++i) {
    const AdamwStep& s = c.steps[i];
    expect_ok(peer_sparse_adamw_f32(p.data(), m.data(), v.data(), steps.data(), c.N, c.d, s.rows.data(), s.grads.data(),
                                    static_cast<int64_t>(s.rows.size()), s.lr, s.beta1, s.beta2, s.eps, s.weight_decay,
                                    s.grad_scale),
              "sparse_adamw " + c.name + " step " + std::to_string(i));
  }
}

void test_optimizer() {
  for (const AdamwCase& c : adamw_cases()) {
    std::vector<float> p, m, v;
    std::vector<int64_t> steps;
    run_adamw(c, p, m, v, steps);
    expect_pass(check_adamw(c, p.data(), m.data(), v.data(), steps.data()));
  }
}

// ---------------------------------------------------------------------------------------------------------------

// Each bad call must return PEER_INVALID_ARGUMENT with a message that names the function and contains `needle`.
void expect_invalid(const char* function, const std::string& needle, const std::function<int()>& call) {
  const int status = call();
  const std::string message = peer_last_error();
  expect(
      status == PEER_INVALID_ARGUMENT && message.find(function) != std::string::npos &&
          message.find(needle) != std::string::npos,
      std::string(function) + " [" + needle + "]: status " + std::to_string(status) + ", message \"" + message + "\"");
}

void test_validation() {
  // Retrieval: rows 2, n 3, key_dim 4, k 2.
  std::vector<float> q(8, 1.0f), keys(12, 1.0f), sc(6), s(6, 1.0f);
  std::vector<int64_t> ix(6);
  const char* pk = "peer_product_key_topk_f32";
  auto product_key = [&](const float* qp, const float* kp, int64_t rows, int64_t n, int64_t kd, int64_t k, float* os,
                         int64_t* oi) {
    return [=] { return peer_product_key_topk_f32(qp, kp, rows, n, kd, k, os, oi); };
  };
  expect_invalid(pk, "queries is null", product_key(nullptr, keys.data(), 2, 3, 4, 2, sc.data(), ix.data()));
  expect_invalid(pk, "sub_keys is null", product_key(q.data(), nullptr, 2, 3, 4, 2, sc.data(), ix.data()));
  expect_invalid(pk, "out_scores is null", product_key(q.data(), keys.data(), 2, 3, 4, 2, nullptr, ix.data()));
  expect_invalid(pk, "out_indices is null", product_key(q.data(), keys.data(), 2, 3, 4, 2, sc.data(), nullptr));
  expect_invalid(pk, "rows must be positive, got 0",
                 product_key(q.data(), keys.data(), 0, 3, 4, 2, sc.data(), ix.data()));
  expect_invalid(pk, "n must be positive, got -3",
                 product_key(q.data(), keys.data(), 2, -3, 4, 2, sc.data(), ix.data()));
  expect_invalid(pk, "key_dim must be positive and even, got 5",
                 product_key(q.data(), keys.data(), 2, 3, 5, 2, sc.data(), ix.data()));
  expect_invalid(pk, "key_dim must be positive and even, got 0",
                 product_key(q.data(), keys.data(), 2, 3, 0, 2, sc.data(), ix.data()));
  expect_invalid(pk, "k must be in [1, n = 3], got 4",
                 product_key(q.data(), keys.data(), 2, 3, 4, 4, sc.data(), ix.data()));
  expect_invalid(pk, "k must be in [1, n = 3], got 0",
                 product_key(q.data(), keys.data(), 2, 3, 4, 0, sc.data(), ix.data()));
  expect_invalid(pk, "n*n keys overflow",
                 product_key(q.data(), keys.data(), 2, int64_t(1) << 40, 4, 2, sc.data(), ix.data()));

  const char* ct = "peer_cartesian_topk_f32";
  expect_invalid(ct, "s1 is null",
                 [&] { return peer_cartesian_topk_f32(nullptr, s.data(), 2, 3, 2, sc.data(), ix.data()); });
  expect_invalid(ct, "s2 is null",
                 [&] { return peer_cartesian_topk_f32(s.data(), nullptr, 2, 3, 2, sc.data(), ix.data()); });
  expect_invalid(ct, "rows must be positive, got -1",
                 [&] { return peer_cartesian_topk_f32(s.data(), s.data(), -1, 3, 2, sc.data(), ix.data()); });
  expect_invalid(ct, "k must be in [1, n = 3], got 5",
                 [&] { return peer_cartesian_topk_f32(s.data(), s.data(), 2, 3, 5, sc.data(), ix.data()); });

  // Experts: T 2, m 3, d 4, N 5; unique rows 3.
  std::vector<float> x(8, 0.5f), gates(6, 1.0f), U(20, 0.25f), V(20, 0.5f), y(8), hidden(6), dy(8, 1.0f);
  std::vector<float> dx(8), dgates(6), du(12), dv(12);
  std::vector<int64_t> idx = {0, 1, 4, 4, 1, 0}, map = {0, 1, 2, 2, 1, 0};
  const char* fw = "peer_expert_forward_f32";
  auto forward = [&](const float* xp, const float* gp, const int64_t* ip, const float* up, const float* vp, int64_t T,
                     int64_t m, int64_t d, int64_t N, int act, float* yp, float* hp) {
    return [=] { return peer_expert_forward_f32(xp, gp, ip, up, vp, T, m, d, N, act, yp, hp); };
  };
  expect_invalid(
      fw, "x is null",
      forward(nullptr, gates.data(), idx.data(), U.data(), V.data(), 2, 3, 4, 5, 0, y.data(), hidden.data()));
  expect_invalid(fw, "gates is null",
                 forward(x.data(), nullptr, idx.data(), U.data(), V.data(), 2, 3, 4, 5, 0, y.data(), hidden.data()));
  expect_invalid(fw, "indices is null",
                 forward(x.data(), gates.data(), nullptr, U.data(), V.data(), 2, 3, 4, 5, 0, y.data(), hidden.data()));
  expect_invalid(
      fw, "U is null",
      forward(x.data(), gates.data(), idx.data(), nullptr, V.data(), 2, 3, 4, 5, 0, y.data(), hidden.data()));
  expect_invalid(
      fw, "V is null",
      forward(x.data(), gates.data(), idx.data(), U.data(), nullptr, 2, 3, 4, 5, 0, y.data(), hidden.data()));
  expect_invalid(
      fw, "y is null",
      forward(x.data(), gates.data(), idx.data(), U.data(), V.data(), 2, 3, 4, 5, 0, nullptr, hidden.data()));
  expect_invalid(fw, "hidden is null",
                 forward(x.data(), gates.data(), idx.data(), U.data(), V.data(), 2, 3, 4, 5, 0, y.data(), nullptr));
  expect_invalid(
      fw, "T must be positive, got 0",
      forward(x.data(), gates.data(), idx.data(), U.data(), V.data(), 0, 3, 4, 5, 0, y.data(), hidden.data()));
  expect_invalid(
      fw, "m must be positive, got 0",
      forward(x.data(), gates.data(), idx.data(), U.data(), V.data(), 2, 0, 4, 5, 0, y.data(), hidden.data()));
  expect_invalid(
      fw, "d must be positive, got -4",
      forward(x.data(), gates.data(), idx.data(), U.data(), V.data(), 2, 3, -4, 5, 0, y.data(), hidden.data()));
  expect_invalid(
      fw, "N must be positive, got 0",
      forward(x.data(), gates.data(), idx.data(), U.data(), V.data(), 2, 3, 4, 0, 0, y.data(), hidden.data()));
  expect_invalid(
      fw, "activation must be 0 (GELU) or 1 (ReLU), got 2",
      forward(x.data(), gates.data(), idx.data(), U.data(), V.data(), 2, 3, 4, 5, 2, y.data(), hidden.data()));
  expect_invalid(
      fw, "indices[2] = 4 is outside [0, N = 4)",
      forward(x.data(), gates.data(), idx.data(), U.data(), V.data(), 2, 3, 4, 4, 0, y.data(), hidden.data()));
  std::vector<int64_t> negative = idx;
  negative[5] = -1;
  expect_invalid(
      fw, "indices[5] = -1 is outside [0, N = 5)",
      forward(x.data(), gates.data(), negative.data(), U.data(), V.data(), 2, 3, 4, 5, 0, y.data(), hidden.data()));

  const char* bw = "peer_expert_backward_f32";
  auto backward = [&](const float* hp, const float* dyp, const int64_t* mp, const int64_t* ip, int64_t unique,
                      int64_t N, float* dxp, float* dgp, float* dup, float* dvp) {
    return [=] {
      return peer_expert_backward_f32(x.data(), gates.data(), ip, U.data(), V.data(), hp, dyp, mp, unique, 2, 3, 4, N,
                                      0, dxp, dgp, dup, dvp);
    };
  };
  expect_ok(backward(hidden.data(), dy.data(), map.data(), idx.data(), 3, 5, dx.data(), dgates.data(), du.data(),
                     dv.data())(),
            "backward with valid arguments");
  expect_invalid(
      bw, "hidden is null",
      backward(nullptr, dy.data(), map.data(), idx.data(), 3, 5, dx.data(), dgates.data(), du.data(), dv.data()));
  expect_invalid(
      bw, "dy is null",
      backward(hidden.data(), nullptr, map.data(), idx.data(), 3, 5, dx.data(), dgates.data(), du.data(), dv.data()));
  expect_invalid(
      bw, "slot_to_row is null",
      backward(hidden.data(), dy.data(), nullptr, idx.data(), 3, 5, dx.data(), dgates.data(), du.data(), dv.data()));
  expect_invalid(
      bw, "dx is null",
      backward(hidden.data(), dy.data(), map.data(), idx.data(), 3, 5, nullptr, dgates.data(), du.data(), dv.data()));
  expect_invalid(
      bw, "dgates is null",
      backward(hidden.data(), dy.data(), map.data(), idx.data(), 3, 5, dx.data(), nullptr, du.data(), dv.data()));
  expect_invalid(
      bw, "dU_rows is null",
      backward(hidden.data(), dy.data(), map.data(), idx.data(), 3, 5, dx.data(), dgates.data(), nullptr, dv.data()));
  expect_invalid(
      bw, "dV_rows is null",
      backward(hidden.data(), dy.data(), map.data(), idx.data(), 3, 5, dx.data(), dgates.data(), du.data(), nullptr));
  expect_invalid(
      bw, "unique_count must be in [1, min(N, T*m) = 5], got 0",
      backward(hidden.data(), dy.data(), map.data(), idx.data(), 0, 5, dx.data(), dgates.data(), du.data(), dv.data()));
  expect_invalid(
      bw, "unique_count must be in [1, min(N, T*m) = 5], got 6",
      backward(hidden.data(), dy.data(), map.data(), idx.data(), 6, 5, dx.data(), dgates.data(), du.data(), dv.data()));
  expect_invalid(
      bw, "slot_to_row[2] = 2 is outside [0, unique_count = 2)",
      backward(hidden.data(), dy.data(), map.data(), idx.data(), 2, 5, dx.data(), dgates.data(), du.data(), dv.data()));
  std::vector<int64_t> bad_map = map;
  bad_map[4] = -2;
  expect_invalid(bw, "slot_to_row[4] = -2 is outside",
                 backward(hidden.data(), dy.data(), bad_map.data(), idx.data(), 3, 5, dx.data(), dgates.data(),
                          du.data(), dv.data()));
  expect_invalid(bw, "indices[5] = -1 is outside",
                 backward(hidden.data(), dy.data(), map.data(), negative.data(), 3, 5, dx.data(), dgates.data(),
                          du.data(), dv.data()));

  // Sparse AdamW: N 4, d 3.
  std::vector<float> p(12, 1.0f), m(12, 0.0f), v(12, 0.0f), g(6, 1.0f);
  std::vector<int64_t> steps(4, 0), rows = {1, 3};
  const std::vector<float> p_before = p;
  const char* aw = "peer_sparse_adamw_f32";
  auto adamw = [&](float* pp, const int64_t* rp, int64_t N, int64_t d, int64_t count, float lr, float b1, float b2,
                   float eps, float wd, float scale) {
    return [=, &m, &v, &steps, &g] {
      return peer_sparse_adamw_f32(pp, m.data(), v.data(), steps.data(), N, d, rp, g.data(), count, lr, b1, b2, eps, wd,
                                   scale);
    };
  };
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  expect_invalid(aw, "param is null", adamw(nullptr, rows.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "rows is null", adamw(p.data(), nullptr, 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "exp_avg is null", [&] {
    return peer_sparse_adamw_f32(p.data(), nullptr, v.data(), steps.data(), 4, 3, rows.data(), g.data(), 2, 0.1f, 0.9f,
                                 0.99f, 1e-8f, 0.0f, 1.0f);
  });
  expect_invalid(aw, "exp_avg_sq is null", [&] {
    return peer_sparse_adamw_f32(p.data(), m.data(), nullptr, steps.data(), 4, 3, rows.data(), g.data(), 2, 0.1f, 0.9f,
                                 0.99f, 1e-8f, 0.0f, 1.0f);
  });
  expect_invalid(aw, "row_steps is null", [&] {
    return peer_sparse_adamw_f32(p.data(), m.data(), v.data(), nullptr, 4, 3, rows.data(), g.data(), 2, 0.1f, 0.9f,
                                 0.99f, 1e-8f, 0.0f, 1.0f);
  });
  expect_invalid(aw, "row_grads is null", [&] {
    return peer_sparse_adamw_f32(p.data(), m.data(), v.data(), steps.data(), 4, 3, rows.data(), nullptr, 2, 0.1f, 0.9f,
                                 0.99f, 1e-8f, 0.0f, 1.0f);
  });
  expect_invalid(aw, "N must be positive, got 0",
                 adamw(p.data(), rows.data(), 0, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "d must be positive, got 0",
                 adamw(p.data(), rows.data(), 4, 0, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "count must be in [1, N = 4], got 0",
                 adamw(p.data(), rows.data(), 4, 3, 0, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "lr must be finite and >= 0, got nan",
                 adamw(p.data(), rows.data(), 4, 3, 2, nan, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "beta1 must be in [0, 1), got 1",
                 adamw(p.data(), rows.data(), 4, 3, 2, 0.1f, 1.0f, 0.99f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "beta2 must be in [0, 1), got -0.5",
                 adamw(p.data(), rows.data(), 4, 3, 2, 0.1f, 0.9f, -0.5f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "eps must be finite and >= 0, got -1",
                 adamw(p.data(), rows.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, -1.0f, 0.0f, 1.0f));
  expect_invalid(aw, "weight_decay must be finite and >= 0, got nan",
                 adamw(p.data(), rows.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, nan, 1.0f));
  expect_invalid(aw, "grad_scale must be finite, got inf",
                 adamw(p.data(), rows.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, inf));
  const std::vector<int64_t> unsorted = {3, 1}, duplicate = {2, 2}, outside = {1, 4};
  expect_invalid(aw, "rows must be strictly increasing, but rows[1] = 1 follows 3",
                 adamw(p.data(), unsorted.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "rows must be strictly increasing, but rows[1] = 2 follows 2",
                 adamw(p.data(), duplicate.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  expect_invalid(aw, "rows[1] = 4 is outside [0, N = 4)",
                 adamw(p.data(), outside.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  steps[3] = -1;
  expect_invalid(aw, "row_steps[3] = -1 is invalid",
                 adamw(p.data(), rows.data(), 4, 3, 2, 0.1f, 0.9f, 0.99f, 1e-8f, 0.0f, 1.0f));
  steps[3] = 0;
  expect(p == p_before && steps == std::vector<int64_t>(4, 0), "rejected AdamW calls change nothing");
}

// ---------------------------------------------------------------------------------------------------------------

// Results must be bitwise identical whatever the thread count (each output is computed by one chunk in a fixed
// order); sizes are chosen so every kernel splits into several chunks.
void test_retrieval_backward() {
  // Odd sizes, repeated keys within and across rows; double-precision reference.
  for (const auto& shape : std::vector<std::array<int64_t, 4>>{{7, 5, 6, 5}, {33, 13, 10, 4}, {129, 37, 2, 1}}) {
    const int64_t rows = shape[0], n = shape[1], key_dim = shape[2], k = shape[3], h = key_dim / 2;
    Rng rng(static_cast<uint64_t>(rows * 1000 + n));
    auto q = rng.symmetric_vector(static_cast<size_t>(rows * key_dim), 1.0f);
    auto keys = rng.symmetric_vector(static_cast<size_t>(2 * n * h), 1.0f);
    auto ds = rng.symmetric_vector(static_cast<size_t>(rows * k), 1.0f);
    std::vector<int64_t> idx(static_cast<size_t>(rows * k));
    for (auto& i : idx) i = static_cast<int64_t>(rng.below(static_cast<uint64_t>(n * n)));
    std::vector<float> dq(q.size(), 123.0f), dk(keys.size(), 123.0f);
    expect_ok(peer_selected_key_backward_f32(q.data(), keys.data(), idx.data(), ds.data(), rows, n, key_dim, k, dq.data(), dk.data()),
              "peer_selected_key_backward_f32");
    std::vector<double> rq(q.size(), 0.0), rk(keys.size(), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < k; ++j) {
        const int64_t a = idx[r * k + j] / n, b = idx[r * k + j] % n;
        const double g = ds[r * k + j];
        for (int64_t p = 0; p < h; ++p) {
          rq[r * key_dim + p] += g * keys[a * h + p];
          rq[r * key_dim + h + p] += g * keys[(n + b) * h + p];
          rk[a * h + p] += g * q[r * key_dim + p];
          rk[(n + b) * h + p] += g * q[r * key_dim + h + p];
        }
      }
    double worst = 0;
    for (size_t i = 0; i < dq.size(); ++i) worst = std::max(worst, std::abs(dq[i] - rq[i]) / (1 + std::abs(rq[i])));
    for (size_t i = 0; i < dk.size(); ++i) worst = std::max(worst, std::abs(dk[i] - rk[i]) / (1 + std::abs(rk[i])));
    expect(worst < 1e-5, "selected-key backward rows=" + std::to_string(rows) + " n=" + std::to_string(n) +
                             ": max relative error " + std::to_string(worst));
  }
  int64_t bad = 25;  // n*n = 25 is out of range
  float q[2] = {1, 2}, keys[10] = {}, ds[1] = {1}, dq[2], dk[10];
  expect(peer_selected_key_backward_f32(q, keys, &bad, ds, 1, 5, 2, 1, dq, dk) == PEER_INVALID_ARGUMENT &&
             std::string(peer_last_error()).find("indices[0] = 25") != std::string::npos,
         "an out-of-range index is rejected with a message naming it");
}

void test_determinism() {
  const ProductKeyCase pk = make_product_key_case("determinism", 501, 300, 100, 64, 8);
  CartesianCase ct = make_cartesian_case("determinism", 502, 400, 60, 12);
  const ExpertCase ex = make_expert_case("determinism", 503, 600, 16, 64, 500, 0);
  const AdamwCase aw = make_adamw_case("determinism", 504, 700, 40, 2, 0.9f, 0.1f);

  struct Outputs {
    std::vector<float> pk_scores, ct_scores, y, hidden, dx, dgates, du, dv, p, m, v;
    std::vector<int64_t> pk_indices, ct_indices, steps;
    bool operator==(const Outputs& o) const {
      auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
        return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
      };
      return same(pk_scores, o.pk_scores) && same(ct_scores, o.ct_scores) && same(y, o.y) && same(hidden, o.hidden) &&
             same(dx, o.dx) && same(dgates, o.dgates) && same(du, o.du) && same(dv, o.dv) && same(p, o.p) &&
             same(m, o.m) && same(v, o.v) && pk_indices == o.pk_indices && ct_indices == o.ct_indices &&
             steps == o.steps;
    }
  };
  auto run = [&](int threads) {
    peer_set_num_threads(threads);
    Outputs o;
    o.pk_scores.resize(static_cast<size_t>(pk.rows * pk.k));
    o.pk_indices.resize(o.pk_scores.size());
    expect_ok(peer_product_key_topk_f32(pk.queries.data(), pk.sub_keys.data(), pk.rows, pk.n, pk.key_dim, pk.k,
                                        o.pk_scores.data(), o.pk_indices.data()),
              "product_key determinism");
    expect_pass(check_topk(pk, o.pk_scores.data(), o.pk_indices.data()));
    o.ct_scores.resize(static_cast<size_t>(ct.rows * ct.k));
    o.ct_indices.resize(o.ct_scores.size());
    expect_ok(peer_cartesian_topk_f32(ct.s1.data(), ct.s2.data(), ct.rows, ct.n, ct.k, o.ct_scores.data(),
                                      o.ct_indices.data()),
              "cartesian determinism");
    expect_pass(check_topk(ct, o.ct_scores.data(), o.ct_indices.data()));
    o.y.resize(static_cast<size_t>(ex.T * ex.d));
    o.hidden.resize(static_cast<size_t>(ex.T * ex.m));
    expect_ok(peer_expert_forward_f32(ex.x.data(), ex.gates.data(), ex.indices.data(), ex.U.data(), ex.V.data(), ex.T,
                                      ex.m, ex.d, ex.N, ex.activation, o.y.data(), o.hidden.data()),
              "expert_forward determinism");
    expect_pass(check_expert_forward(ex, o.y.data(), o.hidden.data()));
    o.dx.resize(o.y.size());
    o.dgates.resize(o.hidden.size());
    o.du.resize(static_cast<size_t>(ex.unique_count * ex.d));
    o.dv.resize(o.du.size());
    expect_ok(
        peer_expert_backward_f32(ex.x.data(), ex.gates.data(), ex.indices.data(), ex.U.data(), ex.V.data(),
                                 ex.hidden_in.data(), ex.dy.data(), ex.slot_to_row.data(), ex.unique_count, ex.T, ex.m,
                                 ex.d, ex.N, ex.activation, o.dx.data(), o.dgates.data(), o.du.data(), o.dv.data()),
        "expert_backward determinism");
    expect_pass(check_expert_backward(ex, o.dx.data(), o.dgates.data(), o.du.data(), o.dv.data()));
    run_adamw(aw, o.p, o.m, o.v, o.steps);
    expect_pass(check_adamw(aw, o.p.data(), o.m.data(), o.v.data(), o.steps.data()));
    return o;
  };
  const Outputs one = run(1);
  for (int threads : {2, 3, 7})
    expect(run(threads) == one, "identical results with 1 and " + std::to_string(threads) + " threads");
  peer_set_num_threads(0);
}

// ---------------------------------------------------------------------------------------------------------------

// Bytes of anonymous huge pages this process holds (/proc/self/smaps_rollup), or -1 where that is not readable.
int64_t anon_huge_bytes() {
  std::FILE* f = std::fopen("/proc/self/smaps_rollup", "r");
  if (!f) return -1;
  char line[256];
  int64_t kb = -1;
  while (std::fgets(line, sizeof(line), f))
    if (std::sscanf(line, "AnonHugePages: %lld kB", reinterpret_cast<long long*>(&kb)) == 1) break;
  std::fclose(f);
  return kb < 0 ? -1 : kb * 1024;
}

void test_memory() {
  const char* fn = "peer_advise_hugepages";
  int64_t advised = -1;
  expect_invalid(fn, "ptr is null", [&] { return peer_advise_hugepages(nullptr, 4096, &advised); });
  std::vector<char> small(4096, 7);
  expect_invalid(fn, "bytes must be non-negative, got -1", [&] { return peer_advise_hugepages(small.data(), -1, nullptr); });
  expect_invalid(fn, "wraps around the address space",
                 [&] { return peer_advise_hugepages(reinterpret_cast<void*>(UINTPTR_MAX - 4095), 8192, nullptr); });
  expect_ok(peer_advise_hugepages(nullptr, 0, &advised), "advise an empty range");
  expect(advised == 0, "an empty range advises 0 bytes");
  advised = -1;
  expect_ok(peer_advise_hugepages(small.data(), static_cast<int64_t>(small.size()), &advised), "advise 4 KiB");
  expect(advised == 0, "a range holding no whole 2 MiB page advises 0 bytes, got " + std::to_string(advised));
  expect(std::all_of(small.begin(), small.end(), [](char c) { return c == 7; }), "advice leaves 4 KiB unchanged");

  // A table-like buffer, filled before the advice as the layer's tables are: contents must survive the collapse.
  const int64_t floats = int64_t{3} << 20;  // 12 MiB: at least 5 whole huge pages at any alignment
  std::vector<float> table(static_cast<size_t>(floats));
  for (int64_t i = 0; i < floats; ++i) table[static_cast<size_t>(i)] = static_cast<float>(i % 1000003) * 0.5f;
  const int64_t huge_before = anon_huge_bytes();
  advised = -1;
  expect_ok(peer_advise_hugepages(table.data(), floats * 4, &advised), "advise a 12 MiB table");
  const int64_t huge_after = anon_huge_bytes();
  bool same = true;
  for (int64_t i = 0; i < floats; ++i) same &= table[static_cast<size_t>(i)] == static_cast<float>(i % 1000003) * 0.5f;
  expect(same, "advice and collapse leave the table's contents unchanged");
  const uintptr_t start = reinterpret_cast<uintptr_t>(table.data()), two_mib = uintptr_t{2} << 20;
  const int64_t whole = static_cast<int64_t>((((start + floats * 4) & ~(two_mib - 1)) - ((start + two_mib - 1) & ~(two_mib - 1))));
  expect(advised == 0 || advised == whole,
         "advised bytes are 0 or the whole 2 MiB pages inside the range (" + std::to_string(whole) + "), got " +
             std::to_string(advised));
#if defined(__linux__)
  std::FILE* mode = std::fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
  char text[128] = {};
  if (mode) {
    text[std::fread(text, 1, sizeof(text) - 1, mode)] = '\0';
    std::fclose(mode);
  }
  const bool thp = mode && std::strstr(text, "[never]") == nullptr;
  expect(!thp || advised == whole, "with THP allowed (" + std::string(text) + ") the whole pages are advised");
  // Collapse may fail for lack of free huge pages on a busy machine, so this is reported rather than required.
  if (thp && huge_before >= 0 && huge_after >= 0)
    std::printf("memory: AnonHugePages %lld -> %lld kB after advising %lld bytes\n", (long long)(huge_before / 1024),
                (long long)(huge_after / 1024), (long long)advised);
#else
  (void)huge_before;
  (void)huge_after;
  expect(advised == 0, "off Linux the advice is a no-op");
#endif
  advised = -1;
  expect_ok(peer_advise_hugepages(table.data(), floats * 4, &advised), "advising the same range again");
  expect_ok(peer_advise_hugepages(table.data() + 1, floats * 4 - 8, nullptr), "an unaligned range, no out-param");
}

}  // namespace

#if defined(PEER_TESTS_WITH_OPENMP)
#include <link.h>
#include <omp.h>

int count_libgomp(struct dl_phdr_info* info, size_t, void* data) {
  if (info->dlpi_name && std::strstr(info->dlpi_name, "libgomp")) ++*static_cast<int*>(data);
  return 0;
}
#endif

int main(int argc, char** argv) {
#if defined(PEER_TESTS_WITH_OPENMP)
  // Start the OpenMP team first, as libtorch has before any kernel runs in the .NET process.
  int team = 0;
#pragma omp parallel
  {
#pragma omp atomic
    ++team;
  }
  int loaded = 0;
  dl_iterate_phdr(count_libgomp, &loaded);
  expect(loaded > 0, "libgomp is loaded in this process (team of " + std::to_string(team) + ")");
#endif
  const std::map<std::string, void (*)()> families = {
      {"runtime", test_runtime},     {"retrieval", test_retrieval},   {"experts", test_experts},
      {"experts_bf16", test_experts_bf16},
      {"optimizer", test_optimizer}, {"validation", test_validation}, {"determinism", test_determinism},
      {"retrieval_backward", test_retrieval_backward}, {"memory", test_memory},
  };
  std::vector<std::string> selected(argv + 1, argv + argc);
  if (selected.empty())
    for (const auto& f : families) selected.push_back(f.first);
  if (std::find(selected.begin(), selected.end(), "runtime") != selected.end()) {
    // Runs first: it checks the state of a thread on which nothing has failed yet.
    selected.erase(std::remove(selected.begin(), selected.end(), "runtime"), selected.end());
    selected.insert(selected.begin(), "runtime");
  }
  for (const std::string& name : selected) {
    const auto family = families.find(name);
    if (family == families.end()) {
      std::printf("unknown test family '%s'\n", name.c_str());
      return 2;
    }
    const int before = failures;
    family->second();
    std::printf("%s: %s\n", name.c_str(), failures == before ? "passed" : "FAILED");
  }
  std::printf("%d checks, %d failures\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
