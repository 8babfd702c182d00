// Seeded test vectors for the PEER kernels, with references computed in double precision (or, where the contract is
// about float32 sums, by float32 brute force). Header-only so the CPU tests (kernel_tests.cpp) and the CUDA tests
// check exactly the same inputs against exactly the same expectations: build a case list, run the kernel on its
// inputs, and pass the outputs to the matching check_* function (empty string = pass).
//
// Inputs are generated without rounding (24-bit integers times powers of two), so every compiler and flag set
// (FMA contraction, -march) reproduces them bit for bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

namespace peer_test {

// SplitMix64: small, seedable and identical everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [-scale, scale) on a 2^-23 grid; exact for power-of-two scales.
  float symmetric(float scale = 1.0f) {
    const int32_t k = static_cast<int32_t>(next() >> 40) - (1 << 23);
    return static_cast<float>(k) * 0x1p-23f * scale;
  }
  // Uniform in [0, 1) on a 2^-24 grid.
  float unit() { return static_cast<float>(next() >> 40) * 0x1p-24f; }
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }
  std::vector<float> symmetric_vector(size_t count, float scale = 1.0f) {
    std::vector<float> v(count);
    for (auto& e : v) e = symmetric(scale);
    return v;
  }

 private:
  uint64_t state_;
};

// ---------------------------------------------------------------------------------------------------------------
// Comparisons
// ---------------------------------------------------------------------------------------------------------------

inline std::string format(const char* fmt, double a = 0, double b = 0, double c = 0, double d = 0) {
  char buffer[512];
  std::snprintf(buffer, sizeof(buffer), fmt, a, b, c, d);
  return buffer;
}

// |got - expected| <= rtol*|expected| + atol*max(1, max|expected|) elementwise; the absolute part scales with the
// tensor so sums that cancel to near zero are not held to a relative bound.
inline std::string check_close(const std::string& what, const float* got, const double* expected, size_t count,
                               double rtol = 1e-5, double atol = 1e-5) {
  double scale = 1.0;
  for (size_t i = 0; i < count; ++i) scale = std::max(scale, std::fabs(expected[i]));
  for (size_t i = 0; i < count; ++i) {
    const double g = got[i], e = expected[i];
    if (!(std::fabs(g - e) <= rtol * std::fabs(e) + atol * scale))
      return what + format("[%.0f]: got %.9g, expected %.9g (scale %.3g)", double(i), g, e, scale);
  }
  return "";
}

inline std::string check_equal(const std::string& what, const int64_t* got, const int64_t* expected, size_t count) {
  for (size_t i = 0; i < count; ++i)
    if (got[i] != expected[i])
      return what + format("[%.0f]: got %.0f, expected %.0f", double(i), double(got[i]), double(expected[i]));
  return "";
}

// Ranks keys by score descending, then index ascending (the order every top-k kernel promises).
template <class Score>
std::vector<int64_t> ranked_top(const Score* scores, int64_t count, int64_t k) {
  std::vector<int64_t> order(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) order[static_cast<size_t>(i)] = i;
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int64_t a, int64_t b) { return scores[a] > scores[b] || (scores[a] == scores[b] && a < b); });
  order.resize(static_cast<size_t>(k));
  return order;
}

// ---------------------------------------------------------------------------------------------------------------
// Product-key retrieval: peer_*product_key_topk_f32(queries, sub_keys, rows, n, key_dim, k, scores, indices)
// ---------------------------------------------------------------------------------------------------------------

struct ProductKeyCase {
  std::string name;
  int64_t rows = 0, n = 0, key_dim = 0, k = 0;
  std::vector<float> queries;          // [rows, key_dim]
  std::vector<float> sub_keys;         // [2, n, key_dim/2]
  std::vector<double> key_scores;      // [rows, n*n]: every key's score in double (brute force)
  std::vector<float> expected_scores;  // [rows, k]
  std::vector<int64_t> expected_indices;
  // Small-integer inputs: every float32 computation is exact, so outputs must match bit for bit, ties included.
  bool exact = false;
};

inline ProductKeyCase make_product_key_case(const std::string& name, uint64_t seed, int64_t rows, int64_t n,
                                            int64_t key_dim, int64_t k, int integer_range = 0) {
  ProductKeyCase c;
  c.name = name;
  c.rows = rows, c.n = n, c.key_dim = key_dim, c.k = k;
  c.exact = integer_range > 0 || integer_range < 0;
  Rng rng(seed);
  auto draw = [&]() -> float {
    if (integer_range > 0) return static_cast<float>(rng.below(2 * integer_range + 1) - integer_range);
    if (integer_range < 0) return 0.0f;  // all zero: every key ties
    return rng.symmetric();
  };
  const int64_t h = key_dim / 2;
  c.queries.resize(static_cast<size_t>(rows * key_dim));
  for (auto& v : c.queries) v = draw();
  c.sub_keys.resize(static_cast<size_t>(2 * n * h));
  for (auto& v : c.sub_keys) v = draw();
  c.key_scores.resize(static_cast<size_t>(rows * n * n));
  std::vector<double> s1(static_cast<size_t>(n)), s2(static_cast<size_t>(n));
  for (int64_t r = 0; r < rows; ++r) {
    const float* q = c.queries.data() + r * key_dim;
    for (int64_t a = 0; a < n; ++a) {
      double d1 = 0, d2 = 0;
      for (int64_t p = 0; p < h; ++p) {
        d1 += double(q[p]) * c.sub_keys[static_cast<size_t>(a * h + p)];
        d2 += double(q[h + p]) * c.sub_keys[static_cast<size_t>((n + a) * h + p)];
      }
      s1[static_cast<size_t>(a)] = d1;
      s2[static_cast<size_t>(a)] = d2;
    }
    double* row = c.key_scores.data() + r * n * n;
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = 0; b < n; ++b) row[a * n + b] = s1[static_cast<size_t>(a)] + s2[static_cast<size_t>(b)];
    for (int64_t i : ranked_top(row, n * n, k)) {
      c.expected_indices.push_back(i);
      c.expected_scores.push_back(static_cast<float>(row[i]));
    }
  }
  return c;
}

inline std::vector<ProductKeyCase> product_key_cases() {
  return {
      make_product_key_case("k_equals_n", 101, 7, 13, 10, 13),
      make_product_key_case("k_one", 102, 5, 13, 10, 1),
      make_product_key_case("odd_sizes", 103, 9, 37, 6, 5),
      make_product_key_case("half_dim_one", 104, 4, 11, 2, 3),
      make_product_key_case("tiles_and_tails", 105, 33, 100, 64, 16),
      make_product_key_case("target_shape_small", 106, 17, 64, 128, 16),
      make_product_key_case("integer_ties", 107, 12, 13, 6, 7, 1),
      make_product_key_case("integer_ties_k_equals_n", 108, 3, 5, 4, 5, 1),
      make_product_key_case("integer_ties_long_rows", 110, 10, 160, 4, 6, 2),
      make_product_key_case("all_zero", 109, 3, 9, 4, 4, -1),
  };
}

// Exact comparison: the same indices in the same order and bitwise-equal scores.
inline std::string check_topk_exact(const std::string& what, int64_t rows, int64_t k, const float* expected_scores,
                                    const int64_t* expected_indices, const float* got_scores,
                                    const int64_t* got_indices) {
  for (int64_t i = 0; i < rows * k; ++i) {
    const bool same_score =
        got_scores[i] == expected_scores[i] || (std::isnan(got_scores[i]) && std::isnan(expected_scores[i]));
    if (got_indices[i] != expected_indices[i] || !same_score)
      return what +
             format(": row %.0f rank %.0f: got key %.0f score %.9g", double(i / k), double(i % k),
                    double(got_indices[i]), got_scores[i]) +
             format(", expected key %.0f score %.9g", double(expected_indices[i]), expected_scores[i]);
  }
  return "";
}

// Against the double brute force: every returned key is distinct, its score is within tol of the reference, the
// order is descending, and no key left out scores more than tol above the lowest one returned. Away from near-ties
// (reference gap > tol at rank k) that means the same index set as expected_indices.
inline std::string check_topk(const ProductKeyCase& c, const float* got_scores, const int64_t* got_indices,
                              double tol = 1e-5) {
  if (c.exact)
    return check_topk_exact(c.name, c.rows, c.k, c.expected_scores.data(), c.expected_indices.data(), got_scores,
                            got_indices);
  const int64_t keys = c.n * c.n;
  std::vector<char> chosen(static_cast<size_t>(keys));
  for (int64_t r = 0; r < c.rows; ++r) {
    const double* ref = c.key_scores.data() + r * keys;
    std::fill(chosen.begin(), chosen.end(), 0);
    double lowest = std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < c.k; ++j) {
      const int64_t key = got_indices[r * c.k + j];
      const float score = got_scores[r * c.k + j];
      if (key < 0 || key >= keys) return c.name + format(": row %.0f: key %.0f out of range", double(r), double(key));
      if (chosen[static_cast<size_t>(key)])
        return c.name + format(": row %.0f: key %.0f twice", double(r), double(key));
      chosen[static_cast<size_t>(key)] = 1;
      if (!(std::fabs(score - ref[key]) <= tol * (1 + std::fabs(ref[key]))))
        return c.name +
               format(": row %.0f key %.0f: score %.9g, reference %.9g", double(r), double(key), score, ref[key]);
      if (j > 0) {
        const float previous = got_scores[r * c.k + j - 1];
        if (score > previous || (score == previous && key < got_indices[r * c.k + j - 1]))
          return c.name + format(": row %.0f: rank %.0f out of order", double(r), double(j));
      }
      lowest = std::min(lowest, ref[key]);
    }
    for (int64_t key = 0; key < keys; ++key)
      if (!chosen[static_cast<size_t>(key)] && ref[key] > lowest + tol * (1 + std::fabs(lowest)))
        return c.name + format(": row %.0f: key %.0f (reference %.9g) missing; lowest returned %.9g", double(r),
                               double(key), ref[key], lowest);
    // Same index set as the reference unless the reference itself is within tol of a tie at rank k.
    if (c.k < keys) {
      std::vector<int64_t> order = ranked_top(ref, keys, c.k + 1);
      const double gap = ref[order[static_cast<size_t>(c.k - 1)]] - ref[order[static_cast<size_t>(c.k)]];
      if (gap > tol * (1 + std::fabs(lowest)))
        for (int64_t j = 0; j < c.k; ++j)
          if (!chosen[static_cast<size_t>(c.expected_indices[static_cast<size_t>(r * c.k + j)])])
            return c.name + format(": row %.0f: expected key %.0f not returned", double(r),
                                   double(c.expected_indices[static_cast<size_t>(r * c.k + j)]));
    }
  }
  return "";
}

// ---------------------------------------------------------------------------------------------------------------
// Cartesian top-k: peer_*cartesian_topk_f32(s1, s2, rows, n, k, scores, indices). The contract is brute force over
// the float32 sums s1[a] + s2[b] (NaN ranking as -inf), so expectations are that brute force and comparisons exact.
// ---------------------------------------------------------------------------------------------------------------

struct CartesianCase {
  std::string name;
  int64_t rows = 0, n = 0, k = 0;
  std::vector<float> s1, s2;  // [rows, n]
  std::vector<float> expected_scores;
  std::vector<int64_t> expected_indices;  // [rows, k]
  // Rows where float rounding makes s1[a'] + s2[b] == s1[a] + s2[b] for s1[a'] != s1[a], so the key index decides.
  bool rounding_ties = false;
  bool special_values = false;  // NaN / ±inf inputs
};

inline void finish_cartesian(CartesianCase& c) {
  const int64_t keys = c.n * c.n;
  std::vector<float> sums(static_cast<size_t>(keys));
  for (int64_t r = 0; r < c.rows; ++r) {
    for (int64_t a = 0; a < c.n; ++a)
      for (int64_t b = 0; b < c.n; ++b) {
        const float v = c.s1[static_cast<size_t>(r * c.n + a)] + c.s2[static_cast<size_t>(r * c.n + b)];
        sums[static_cast<size_t>(a * c.n + b)] = std::isnan(v) ? -std::numeric_limits<float>::infinity() : v;
      }
    for (int64_t i : ranked_top(sums.data(), keys, c.k)) {
      c.expected_indices.push_back(i);
      c.expected_scores.push_back(sums[static_cast<size_t>(i)]);
    }
  }
}

inline CartesianCase make_cartesian_case(const std::string& name, uint64_t seed, int64_t rows, int64_t n, int64_t k) {
  CartesianCase c;
  c.name = name;
  c.rows = rows, c.n = n, c.k = k;
  Rng rng(seed);
  c.s1 = rng.symmetric_vector(static_cast<size_t>(rows * n), 4.0f);
  c.s2 = rng.symmetric_vector(static_cast<size_t>(rows * n), 4.0f);
  finish_cartesian(c);
  return c;
}

inline std::vector<CartesianCase> cartesian_cases() {
  std::vector<CartesianCase> cases = {
      make_cartesian_case("k_equals_n", 201, 7, 13, 13),  make_cartesian_case("k_one", 202, 5, 13, 1),
      make_cartesian_case("odd_sizes", 203, 9, 37, 5),    make_cartesian_case("many_rows", 204, 70, 40, 16),
      make_cartesian_case("long_rows", 209, 40, 500, 16), make_cartesian_case("long_rows_small_k", 210, 60, 300, 3),
  };
  {  // One half dwarfs the other: s1 differences vanish in the sums, so keys tie and the smaller a must win.
    CartesianCase c;
    c.name = "rounding_ties";
    c.rows = 6, c.n = 29, c.k = 9;
    c.rounding_ties = true;
    Rng rng(205);
    for (int64_t i = 0; i < c.rows * c.n; ++i) c.s1.push_back(rng.symmetric(0x1p-12f));
    for (int64_t i = 0; i < c.rows * c.n; ++i) c.s2.push_back(1024.0f + rng.symmetric(16.0f));
    for (int64_t i = 0; i < 6; ++i) c.s2[static_cast<size_t>(i)] = 1040.0f;  // exact ties in s2 as well
    finish_cartesian(c);
    cases.push_back(c);
  }
  {  // Long rows (n >> k, the usual shape) with ties inside each half and rounding ties across them.
    CartesianCase c;
    c.name = "long_rows_with_ties";
    c.rows = 12, c.n = 300, c.k = 9;
    c.rounding_ties = true;
    Rng rng(208);
    for (int64_t i = 0; i < c.rows * c.n; ++i) c.s1.push_back(static_cast<float>(rng.below(60)) * 0x1p-14f);
    for (int64_t i = 0; i < c.rows * c.n; ++i) c.s2.push_back(static_cast<float>(4096 + rng.below(200)) * 0.125f);
    finish_cartesian(c);
    cases.push_back(c);
  }
  {  // Exact ties everywhere (e.g. zero queries): keys 0..k-1 win.
    CartesianCase c;
    c.name = "all_equal";
    c.rows = 2, c.n = 17, c.k = 6;
    c.s1.assign(static_cast<size_t>(c.rows * c.n), 0.5f);
    c.s2.assign(static_cast<size_t>(c.rows * c.n), -0.25f);
    finish_cartesian(c);
    cases.push_back(c);
  }
  {  // Few distinct values: ties inside each half and across the k boundary.
    CartesianCase c;
    c.name = "grouped_ties";
    c.rows = 8, c.n = 23, c.k = 10;
    Rng rng(206);
    for (int64_t i = 0; i < c.rows * c.n; ++i) c.s1.push_back(static_cast<float>(rng.below(4)));
    for (int64_t i = 0; i < c.rows * c.n; ++i) c.s2.push_back(static_cast<float>(rng.below(3)) * 0.5f);
    finish_cartesian(c);
    cases.push_back(c);
  }
  {  // NaN ranks as -inf; infinities make every sum with them collapse.
    CartesianCase c;
    c.name = "special_values";
    c.rows = 4, c.n = 11, c.k = 5;
    c.special_values = true;
    Rng rng(207);
    c.s1 = rng.symmetric_vector(static_cast<size_t>(c.rows * c.n), 2.0f);
    c.s2 = rng.symmetric_vector(static_cast<size_t>(c.rows * c.n), 2.0f);
    const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    c.s1[3] = nan, c.s2[5] = inf;                                               // row 0
    c.s1[11 + 2] = inf, c.s1[11 + 7] = inf, c.s2[11 + 4] = -inf;                // row 1
    for (int64_t i = 0; i < c.n; ++i) c.s1[static_cast<size_t>(22 + i)] = nan;  // row 2: all NaN
    c.s2[33 + 1] = -inf, c.s2[33 + 9] = nan;                                    // row 3
    finish_cartesian(c);
    cases.push_back(c);
  }
  return cases;
}

inline std::string check_topk(const CartesianCase& c, const float* got_scores, const int64_t* got_indices) {
  return check_topk_exact(c.name, c.rows, c.k, c.expected_scores.data(), c.expected_indices.data(), got_scores,
                          got_indices);
}

// ---------------------------------------------------------------------------------------------------------------
// Experts: peer_*expert_forward_f32 / peer_*expert_backward_f32
// ---------------------------------------------------------------------------------------------------------------

inline double reference_activation(int activation, double h) {
  return activation == 0 ? 0.5 * h * (1.0 + std::erf(h / std::sqrt(2.0))) : (h > 0 ? h : 0.0);
}
inline double reference_activation_grad(int activation, double h) {
  const double inv_sqrt_2pi = 0.39894228040143267794;
  if (activation == 0) return 0.5 * (1.0 + std::erf(h / std::sqrt(2.0))) + h * std::exp(-0.5 * h * h) * inv_sqrt_2pi;
  return h > 0 ? 1.0 : 0.0;
}

struct ExpertCase {
  std::string name;
  int64_t T = 0, m = 0, d = 0, N = 0;
  int activation = 0;                 // 0 = GELU (erf), 1 = ReLU
  std::vector<float> x, gates, U, V;  // [T,d], [T,m], [N,d], [N,d]
  std::vector<int64_t> indices;       // [T,m]
  // Forward reference.
  std::vector<double> y, hidden;  // [T,d], [T,m]
  // Backward inputs: dy, hidden as float32 (the reference hidden rounded, what a forward would hand over), and the
  // torch.unique(indices, sorted=True, return_inverse=True) pair.
  std::vector<float> dy, hidden_in;
  std::vector<int64_t> unique_experts, slot_to_row;
  int64_t unique_count = 0;
  // Backward reference (computed from hidden_in).
  std::vector<double> dx, dgates, dU_rows, dV_rows;  // [T,d], [T,m], [unique_count,d] x 2
};

inline ExpertCase make_expert_case(const std::string& name, uint64_t seed, int64_t T, int64_t m, int64_t d, int64_t N,
                                   int activation, bool repeat_first_token = false) {
  ExpertCase c;
  c.name = name;
  c.T = T, c.m = m, c.d = d, c.N = N, c.activation = activation;
  Rng rng(seed);
  c.x = rng.symmetric_vector(static_cast<size_t>(T * d));
  c.gates = rng.symmetric_vector(static_cast<size_t>(T * m));
  c.U = rng.symmetric_vector(static_cast<size_t>(N * d), 0.5f);
  c.V = rng.symmetric_vector(static_cast<size_t>(N * d));
  c.dy = rng.symmetric_vector(static_cast<size_t>(T * d));
  for (int64_t s = 0; s < T * m; ++s) c.indices.push_back(rng.below(N));
  if (repeat_first_token)  // one expert in every slot of token 0: duplicates within a token
    for (int64_t j = 0; j < m; ++j) c.indices[static_cast<size_t>(j)] = c.indices[0];

  c.y.assign(static_cast<size_t>(T * d), 0.0);
  c.hidden.assign(static_cast<size_t>(T * m), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < m; ++j) {
      const int64_t s = t * m + j, e = c.indices[static_cast<size_t>(s)];
      double h = 0;
      for (int64_t i = 0; i < d; ++i)
        h += double(c.U[static_cast<size_t>(e * d + i)]) * c.x[static_cast<size_t>(t * d + i)];
      c.hidden[static_cast<size_t>(s)] = h;
      const double coef = c.gates[static_cast<size_t>(s)] * reference_activation(activation, h);
      for (int64_t i = 0; i < d; ++i) c.y[static_cast<size_t>(t * d + i)] += coef * c.V[static_cast<size_t>(e * d + i)];
    }

  c.unique_experts = c.indices;
  std::sort(c.unique_experts.begin(), c.unique_experts.end());
  c.unique_experts.erase(std::unique(c.unique_experts.begin(), c.unique_experts.end()), c.unique_experts.end());
  c.unique_count = static_cast<int64_t>(c.unique_experts.size());
  for (int64_t e : c.indices)
    c.slot_to_row.push_back(std::lower_bound(c.unique_experts.begin(), c.unique_experts.end(), e) -
                            c.unique_experts.begin());

  for (double h : c.hidden) c.hidden_in.push_back(static_cast<float>(h));
  c.dx.assign(static_cast<size_t>(T * d), 0.0);
  c.dgates.assign(static_cast<size_t>(T * m), 0.0);
  c.dU_rows.assign(static_cast<size_t>(c.unique_count * d), 0.0);
  c.dV_rows.assign(static_cast<size_t>(c.unique_count * d), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < m; ++j) {
      const int64_t s = t * m + j, e = c.indices[static_cast<size_t>(s)], r = c.slot_to_row[static_cast<size_t>(s)];
      double vdy = 0;
      for (int64_t i = 0; i < d; ++i)
        vdy += double(c.V[static_cast<size_t>(e * d + i)]) * c.dy[static_cast<size_t>(t * d + i)];
      const double h = c.hidden_in[static_cast<size_t>(s)], g = c.gates[static_cast<size_t>(s)];
      const double a = reference_activation(activation, h);
      c.dgates[static_cast<size_t>(s)] = a * vdy;
      const double cu = g * reference_activation_grad(activation, h) * vdy, cv = g * a;
      for (int64_t i = 0; i < d; ++i) {
        c.dx[static_cast<size_t>(t * d + i)] += cu * c.U[static_cast<size_t>(e * d + i)];
        c.dU_rows[static_cast<size_t>(r * d + i)] += cu * c.x[static_cast<size_t>(t * d + i)];
        c.dV_rows[static_cast<size_t>(r * d + i)] += cv * c.dy[static_cast<size_t>(t * d + i)];
      }
    }
  return c;
}

inline std::vector<ExpertCase> expert_cases() {
  return {
      make_expert_case("gelu_duplicates", 301, 11, 5, 37, 7, 0, true),
      make_expert_case("relu_duplicates", 302, 11, 5, 37, 7, 1, true),
      make_expert_case("single", 303, 1, 1, 1, 1, 0),
      make_expert_case("gelu_wide", 304, 13, 9, 300, 50, 0, true),
      make_expert_case("relu_mostly_unique", 305, 6, 16, 70, 1000, 1),
      make_expert_case("gelu_one_expert", 306, 5, 3, 33, 1, 0),
  };
}

// y and hidden of a forward call.
inline std::string check_expert_forward(const ExpertCase& c, const float* y, const float* hidden) {
  std::string e = check_close(c.name + ".hidden", hidden, c.hidden.data(), c.hidden.size());
  return e.empty() ? check_close(c.name + ".y", y, c.y.data(), c.y.size()) : e;
}

inline std::string check_expert_backward(const ExpertCase& c, const float* dx, const float* dgates,
                                         const float* dU_rows, const float* dV_rows) {
  for (std::string e : {check_close(c.name + ".dx", dx, c.dx.data(), c.dx.size()),
                        check_close(c.name + ".dgates", dgates, c.dgates.data(), c.dgates.size()),
                        check_close(c.name + ".dU_rows", dU_rows, c.dU_rows.data(), c.dU_rows.size()),
                        check_close(c.name + ".dV_rows", dV_rows, c.dV_rows.data(), c.dV_rows.size())})
    if (!e.empty()) return e;
  return "";
}

// ---------------------------------------------------------------------------------------------------------------
// Sparse AdamW: several peer_*sparse_adamw_f32 calls in sequence on one table, against a dense double reference
// that keeps a step count per row.
// ---------------------------------------------------------------------------------------------------------------

struct AdamwStep {
  std::vector<int64_t> rows;  // strictly increasing
  std::vector<float> grads;   // [rows.size(), d]
  float lr, beta1, beta2, eps, weight_decay, grad_scale;
};

struct AdamwCase {
  std::string name;
  int64_t N = 0, d = 0;
  std::vector<float> param, exp_avg, exp_avg_sq;  // initial state [N,d]
  std::vector<int64_t> row_steps;                 // initial [N]
  std::vector<AdamwStep> steps;
  std::vector<double> expected_param, expected_exp_avg, expected_exp_avg_sq;
  std::vector<int64_t> expected_row_steps;
};

inline AdamwCase make_adamw_case(const std::string& name, uint64_t seed, int64_t N, int64_t d, int steps, float beta1,
                                 float weight_decay) {
  AdamwCase c;
  c.name = name;
  c.N = N, c.d = d;
  Rng rng(seed);
  c.param = rng.symmetric_vector(static_cast<size_t>(N * d));
  c.exp_avg.assign(static_cast<size_t>(N * d), 0.0f);
  c.exp_avg_sq.assign(static_cast<size_t>(N * d), 0.0f);
  c.row_steps.assign(static_cast<size_t>(N), 0);
  for (int64_t r = 0; r < N; r += 3) {  // every third row starts mid-training
    c.row_steps[static_cast<size_t>(r)] = 1 + rng.below(4);
    for (int64_t i = 0; i < d; ++i) {
      c.exp_avg[static_cast<size_t>(r * d + i)] = rng.symmetric(0.125f);
      c.exp_avg_sq[static_cast<size_t>(r * d + i)] = rng.unit() * 0.0625f;
    }
  }
  for (int s = 0; s < steps; ++s) {
    AdamwStep step;
    for (int64_t r = 0; r < N; ++r)
      if (rng.below(2) == 0) step.rows.push_back(r);
    if (step.rows.empty()) step.rows.push_back(rng.below(N));
    step.grads = rng.symmetric_vector(step.rows.size() * static_cast<size_t>(d), 2.0f);
    step.lr = 0.01f * static_cast<float>(s + 1);
    step.beta1 = beta1;
    step.beta2 = 0.999f;
    step.eps = 1e-8f;
    step.weight_decay = weight_decay;
    step.grad_scale = s % 2 == 0 ? 0.5f : 1.0f;
    c.steps.push_back(step);
  }

  c.expected_param.assign(c.param.begin(), c.param.end());
  c.expected_exp_avg.assign(c.exp_avg.begin(), c.exp_avg.end());
  c.expected_exp_avg_sq.assign(c.exp_avg_sq.begin(), c.exp_avg_sq.end());
  c.expected_row_steps = c.row_steps;
  for (const AdamwStep& step : c.steps)
    for (size_t i = 0; i < step.rows.size(); ++i) {
      const int64_t row = step.rows[i];
      const int64_t s = ++c.expected_row_steps[static_cast<size_t>(row)];
      const double b1 = step.beta1, b2 = step.beta2, lr = step.lr;
      const double bc1 = 1 - std::pow(b1, double(s)), bc2 = 1 - std::pow(b2, double(s));
      for (int64_t j = 0; j < d; ++j) {
        const size_t at = static_cast<size_t>(row * d + j);
        const double g = double(step.grad_scale) * step.grads[i * static_cast<size_t>(d) + static_cast<size_t>(j)];
        double& p = c.expected_param[at];
        double& m = c.expected_exp_avg[at];
        double& v = c.expected_exp_avg_sq[at];
        p *= 1 - lr * step.weight_decay;
        m = b1 * m + (1 - b1) * g;
        v = b2 * v + (1 - b2) * g * g;
        p -= lr * (m / bc1) / (std::sqrt(v / bc2) + step.eps);
      }
    }
  return c;
}

inline std::vector<AdamwCase> adamw_cases() {
  return {
      make_adamw_case("decoupled_decay", 401, 13, 37, 5, 0.9f, 0.1f),
      make_adamw_case("no_momentum_no_decay", 402, 9, 5, 4, 0.0f, 0.0f),
      make_adamw_case("single_row", 403, 1, 1, 3, 0.9f, 0.01f),
  };
}

inline std::string check_adamw(const AdamwCase& c, const float* param, const float* exp_avg, const float* exp_avg_sq,
                               const int64_t* row_steps) {
  const size_t count = c.expected_param.size();
  for (std::string e :
       {check_close(c.name + ".param", param, c.expected_param.data(), count),
        check_close(c.name + ".exp_avg", exp_avg, c.expected_exp_avg.data(), count),
        check_close(c.name + ".exp_avg_sq", exp_avg_sq, c.expected_exp_avg_sq.data(), count),
        check_equal(c.name + ".row_steps", row_steps, c.expected_row_steps.data(), c.expected_row_steps.size())})
    if (!e.empty()) return e;
  return "";
}

}  // namespace peer_test
