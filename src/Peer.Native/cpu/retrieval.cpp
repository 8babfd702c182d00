// Product-key retrieval: exact top-k over n² keys scored s1[a] + s2[b], from the two halves' top candidates.
//
// Order: score descending, then key index a*n+b ascending; scores are the float32 sums of the half scores, and NaN
// ranks as -inf. Taking the top k of each half (same order on its own index) and combining them is exact in real
// arithmetic, but float rounding can make s1[a'] + s2[b] == s1[a] + s2[b] although s1[a'] > s1[a] (a large s2[b]
// absorbs the difference), and then the index decides. Such "collapses" need |s1[a'] - s1[a]| <= delta (defined in
// collapse_width), so each half's list is extended, rarely, by the excluded entries that could collapse with a kept
// one; that keeps the result equal to brute force over all n² float sums. See extend_for_collapses for the proof.
#include <cmath>
#include <cstring>
#include <limits>

#include "peer_internal.h"

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Ranks (va, ia) before (vb, ib). Values are sanitised (never NaN).
inline bool ranks_before(float va, int64_t ia, float vb, int64_t ib) { return va > vb || (va == vb && ia < ib); }

inline float sanitise(float v) { return v == v ? v : kNegInf; }

// Inserts (value, index) into the sorted list (v, ix) of `count` <= cap entries, dropping the last when full. The
// caller has checked that a full list's last entry ranks after the new one.
inline void insert_ranked(float* v, int64_t* ix, int64_t& count, int64_t cap, float value, int64_t index) {
  int64_t pos = count < cap ? count++ : cap - 1;
  while (pos > 0 && ranks_before(value, index, v[pos - 1], ix[pos - 1])) {
    v[pos] = v[pos - 1];
    ix[pos] = ix[pos - 1];
    --pos;
  }
  v[pos] = value;
  ix[pos] = index;
}

// Top `cap` (<= n) of a sanitised row, ranked, by a scan in index order: a new value only enters when strictly
// greater than the current last (an equal one has a larger index). Used for short or tie-heavy rows.
void select_top_scan(const float* s, int64_t n, int64_t cap, float* v, int64_t* ix) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i)
    if (count < cap || s[i] > v[cap - 1]) insert_ranked(v, ix, count, cap, s[i], i);
}

// Per-thread buffers of select_top, sized for rows of n and lists of cap.
struct SelectScratch {
  std::vector<float> group_max, group_min, candidate_v;
  std::vector<int32_t> at_least, candidate_i, rank;
  std::vector<uint8_t> flags;
  SelectScratch(int64_t n, int64_t cap)
      : group_max(group_count(cap)),
        group_min(group_count(cap)),
        candidate_v(candidate_limit(cap)),
        at_least(group_count(cap)),
        candidate_i(candidate_limit(cap)),
        rank(candidate_limit(cap)),
        flags(n + 8) {}
  static int64_t group_count(int64_t cap) { return (2 * cap + 15) / 16 * 16; }  // >= 2 cap, whole vectors
  static int64_t candidate_limit(int64_t cap) { return 8 * cap; }
};

float max_abs(const float* s, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(s[i]));
  return m;
}

// Top `cap` (<= n) of a sanitised row, ranked; also returns max |s| (for collapse_width). Built from branch-free,
// vectorised passes because data-dependent branches (insertion, nth_element) cost more than the arithmetic here:
//  1. Split the row into G >= 2 cap strided groups (group j = {j, j+G, ...}), whose maxima (and minima, for max |s|)
//     are one vertical pass.
//  2. t = the cap-th largest group maximum, by counting for each maximum how many are >= it. cap groups each hold a
//     value >= t, so the cap-th largest value is >= t: only values >= t can be selected (~1.2 cap of them for random
//     rows).
//  3. Flag values >= t in one pass and collect them (in index order) from the nonzero 8-byte words of flags.
//  4. Each candidate's rank = how many candidates rank before it (value desc, index asc); ranks < cap are the result.
// Rows too short for this, or with more than 8 cap candidates (ties), take the plain scan.
float select_top(const float* __restrict s, int64_t n, int64_t cap, float* v, int64_t* ix, SelectScratch& w) {
  const int64_t groups = SelectScratch::group_count(cap), size = n / groups;
  if (size < 4 || n > INT32_MAX) {
    select_top_scan(s, n, cap, v, ix);
    return max_abs(s, n);
  }
  float* __restrict gmax = w.group_max.data();
  float* __restrict gmin = w.group_min.data();
  for (int64_t j = 0; j < groups; ++j) gmax[j] = gmin[j] = s[j];
  for (int64_t r = 1; r < size; ++r) {
    const float* __restrict row = s + r * groups;
    for (int64_t j = 0; j < groups; ++j) {
      gmax[j] = gmax[j] < row[j] ? row[j] : gmax[j];
      gmin[j] = gmin[j] > row[j] ? row[j] : gmin[j];
    }
  }
  float top = gmax[0], bottom = gmin[0];
  for (int64_t j = 1; j < groups; ++j) {
    top = std::max(top, gmax[j]);
    bottom = std::min(bottom, gmin[j]);
  }
  for (int64_t i = groups * size; i < n; ++i) {  // the last n % G values are in no group (but are flagged below)
    top = std::max(top, s[i]);
    bottom = std::min(bottom, s[i]);
  }
  const float abs_max = std::max(std::fabs(top), std::fabs(bottom));

  int32_t* __restrict at_least = w.at_least.data();
  for (int64_t j = 0; j < groups; ++j) at_least[j] = 0;
  for (int64_t i = 0; i < groups; ++i) {
    const float x = gmax[i];
    for (int64_t j = 0; j < groups; ++j) at_least[j] += x >= gmax[j] ? 1 : 0;
  }
  float t = kNegInf;
  for (int64_t j = 0; j < groups; ++j) t = at_least[j] >= cap && gmax[j] > t ? gmax[j] : t;

  uint8_t* __restrict flags = w.flags.data();
  for (int64_t i = 0; i < n; ++i) flags[i] = s[i] >= t ? 1 : 0;
  float* __restrict cv = w.candidate_v.data();
  int32_t* __restrict ci = w.candidate_i.data();
  const int64_t limit = SelectScratch::candidate_limit(cap);
  int64_t found = 0;
  for (int64_t base = 0; base < n; base += 8) {
    uint64_t word = 0;
    std::memcpy(&word, flags + base, 8);  // the 8 bytes past n are never written, so stay 0
    for (; word != 0; word &= word - 1) {
      const int64_t i = base + (__builtin_ctzll(word) >> 3);
      if (found == limit) {
        select_top_scan(s, n, cap, v, ix);
        return abs_max;
      }
      cv[found] = s[i];
      ci[found] = static_cast<int32_t>(i);
      ++found;
    }
  }

  if (found < cap) {  // impossible by step 2; kept so a mistake there could never leave the list short
    select_top_scan(s, n, cap, v, ix);
    return abs_max;
  }
  int32_t* __restrict rank = w.rank.data();
  for (int64_t c = 0; c < found; ++c) rank[c] = 0;
  for (int64_t o = 0; o < found; ++o) {
    const float vo = cv[o];
    const int32_t io = ci[o];
    for (int64_t c = 0; c < found; ++c) rank[c] += (vo > cv[c]) | ((vo == cv[c]) & (io < ci[c]));
  }
  for (int64_t c = 0; c < found; ++c)
    if (rank[c] < cap) {
      v[rank[c]] = cv[c];
      ix[rank[c]] = ci[c];
    }
  return abs_max;
}

// If float(x + c) == float(y + c) for x > y then both exact sums round to one float f, so
// x - y <= ulp(f) <= 2^-23 |f| <= 2^-23 (max|s1| + max|s2|)(1 + 2^-24) < delta. Infinite scores give delta = inf.
inline float collapse_width(float max_abs1, float max_abs2) { return (max_abs1 + max_abs2) * 0x1p-20f; }

// (v, ix) holds the top k+1 (k < n) of the sanitised row s. Keeps the first k and appends, ranked, every excluded
// entry a that a kept entry a' could tie through a collapse (a' > a, 0 < s[a'] - s[a] <= delta); returns the new
// length. Any other excluded a loses to all k kept a' for every partner b: either s[a'] - s[a] > delta (strictly
// larger sum), or s[a'] >= s[a] with a' < a (sum no smaller, smaller key index). So no key (a, b) outside the
// extended list can be in the top k; the same argument holds for the second half with b.
int64_t extend_for_collapses(const float* s, int64_t n, int64_t k, float delta, float* v, int64_t* ix) {
  const float kth = v[k - 1];
  const int64_t kth_index = ix[k - 1];
  if (v[k] < kth - delta) return k;  // nothing excluded comes within delta (NaN from infinities takes the slow path)
  int64_t count = k;
  for (int64_t a = 0; a < n; ++a) {
    const float sa = s[a];
    const bool excluded = sa < kth || (sa == kth && a > kth_index);
    if (!excluded || sa < kth - delta || !(v[0] > sa)) continue;
    bool collapses = false;
    for (int64_t j = 0; j < k && !collapses; ++j) collapses = ix[j] > a && v[j] > sa && !(v[j] > sa + delta);
    if (collapses) {
      int64_t extra = count - k;  // at most n - k extras, so the n-entry buffers never overflow
      insert_ranked(v + k, ix + k, extra, n - k, sa, a);
      count = k + extra;
    }
  }
  return count;
}

struct RowScratch {
  std::vector<float> first_v, second_v, best_v, clean1, clean2;
  std::vector<int64_t> first_ix, second_ix, best_ix;
  SelectScratch select;
  RowScratch(int64_t n, int64_t k)
      : first_v(n),
        second_v(n),
        best_v(k),
        clean1(n),
        clean2(n),
        first_ix(n),
        second_ix(n),
        best_ix(k),
        select(n, std::min(k + 1, n)) {}
};

// Top k keys of one row from its sanitised half scores s1, s2 [n].
void topk_row(const float* s1, const float* s2, int64_t n, int64_t k, RowScratch& w, float* out_scores,
              int64_t* out_indices) {
  float* av = w.first_v.data();
  float* bv = w.second_v.data();
  int64_t* ai = w.first_ix.data();
  int64_t* bi = w.second_ix.data();
  const int64_t cap = std::min(k + 1, n);
  const float max_abs1 = select_top(s1, n, cap, av, ai, w.select);
  const float max_abs2 = select_top(s2, n, cap, bv, bi, w.select);
  int64_t na = cap, nb = cap;
  if (k < n) {
    const float delta = collapse_width(max_abs1, max_abs2);
    na = extend_for_collapses(s1, n, k, delta, av, ai);
    nb = extend_for_collapses(s2, n, k, delta, bv, bi);
  }

  // Both lists are ranked, so along either one the (monotone) float sum never increases: stop a row once a sum falls
  // strictly below the current k-th, and stop altogether when that happens at a row's first partner.
  float* rv = w.best_v.data();
  int64_t* ri = w.best_ix.data();
  int64_t count = 0;
  for (int64_t i = 0; i < na; ++i) {
    bool stop = false;
    for (int64_t j = 0; j < nb; ++j) {
      const float value = sanitise(av[i] + bv[j]);
      const int64_t index = ai[i] * n + bi[j];
      if (count == k) {
        if (value < rv[k - 1]) {
          stop = j == 0;
          break;
        }
        if (!ranks_before(value, index, rv[k - 1], ri[k - 1])) continue;
      }
      insert_ranked(rv, ri, count, k, value, index);
    }
    if (stop) break;
  }
  std::memcpy(out_scores, rv, sizeof(float) * static_cast<size_t>(k));
  std::memcpy(out_indices, ri, sizeof(int64_t) * static_cast<size_t>(k));
}

// Sub-key score tile: out[r][c] = q[r] · kt[:, c] for RB query rows and CB sub-keys, kt being the transposed half
// [h, ldk]. Accumulators live in registers (8 x 32 floats); the inner loops vectorise over c.
constexpr int RB = 8;
constexpr int CB = 32;

inline void score_tile(const float* const* q, const float* __restrict kt, int64_t ldk, int64_t h, float* __restrict out,
                       int64_t ldo) {
  float acc[RB][CB] = {};
  for (int64_t p = 0; p < h; ++p) {
    const float* __restrict kr = kt + p * ldk;
    for (int r = 0; r < RB; ++r) {
      const float qv = q[r][p];
      for (int c = 0; c < CB; ++c) acc[r][c] += qv * kr[c];
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < CB; ++c) out[r * ldo + c] = sanitise(acc[r][c]);
}

}  // namespace

extern "C" {

PEER_API int peer_product_key_topk_f32(const float* queries, const float* sub_keys, int64_t rows, int64_t n,
                                       int64_t key_dim, int64_t k, float* out_scores, int64_t* out_indices) {
  static const char* const fn = "peer_product_key_topk_f32";
  return peer::guarded(fn, [&]() -> int {
    PEER_REQUIRE(queries, "%s: queries is null", fn);
    PEER_REQUIRE(sub_keys, "%s: sub_keys is null", fn);
    PEER_REQUIRE(out_scores, "%s: out_scores is null", fn);
    PEER_REQUIRE(out_indices, "%s: out_indices is null", fn);
    PEER_REQUIRE(rows > 0, "%s: rows must be positive, got %lld", fn, (long long)rows);
    PEER_REQUIRE(n > 0, "%s: n must be positive, got %lld", fn, (long long)n);
    PEER_REQUIRE(key_dim > 0 && key_dim % 2 == 0, "%s: key_dim must be positive and even, got %lld", fn,
                 (long long)key_dim);
    PEER_REQUIRE(k > 0 && k <= n, "%s: k must be in [1, n = %lld], got %lld", fn, (long long)n, (long long)k);
    int64_t size;
    PEER_REQUIRE(peer::checked_mul(n, n, &size), "%s: n = %lld makes n*n keys overflow", fn, (long long)n);
    PEER_REQUIRE(peer::checked_mul(rows, key_dim, &size) && peer::checked_mul(n, key_dim, &size) &&
                     peer::checked_mul(rows, n, &size),
                 "%s: sizes too large (rows = %lld, n = %lld, key_dim = %lld)", fn, (long long)rows, (long long)n,
                 (long long)key_dim);

    const int64_t h = key_dim / 2;
    const int64_t n_pad = (n + CB - 1) / CB * CB;
    // Transposed halves [2][h][n_pad], zero-padded, so tiles read contiguous sub-key columns.
    std::vector<float> kt(static_cast<size_t>(2 * h * n_pad), 0.0f);
    for (int64_t half = 0; half < 2; ++half)
      for (int64_t c = 0; c < n; ++c) {
        const float* src = sub_keys + (half * n + c) * h;
        float* dst = kt.data() + half * h * n_pad + c;
        for (int64_t p = 0; p < h; ++p) dst[p * n_pad] = src[p];
      }
    const std::vector<float> zero_row(static_cast<size_t>(h), 0.0f);  // stands in for rows past the end

    const int64_t blocks = (rows + RB - 1) / RB;
    const int64_t grain = 4;
    const int workers = peer::worker_count(blocks, grain);
    std::vector<RowScratch> scratch;
    std::vector<std::vector<float>> scores(static_cast<size_t>(workers));
    scratch.reserve(static_cast<size_t>(workers));
    for (int w = 0; w < workers; ++w) {
      scratch.emplace_back(n, k);
      scores[static_cast<size_t>(w)].resize(static_cast<size_t>(2 * RB * n_pad));
    }

    peer::parallel_for(blocks, grain, workers, [&](int64_t lo, int64_t hi, int worker) {
      float* s = scores[static_cast<size_t>(worker)].data();  // [2][RB][n_pad]
      for (int64_t block = lo; block < hi; ++block) {
        const int64_t r0 = block * RB;
        const int64_t valid = std::min<int64_t>(RB, rows - r0);
        for (int64_t half = 0; half < 2; ++half) {
          const float* q[RB];
          for (int r = 0; r < RB; ++r) q[r] = r < valid ? queries + (r0 + r) * key_dim + half * h : zero_row.data();
          const float* kth = kt.data() + half * h * n_pad;
          float* sh = s + half * RB * n_pad;
          for (int64_t c0 = 0; c0 < n_pad; c0 += CB) score_tile(q, kth + c0, n_pad, h, sh + c0, n_pad);
        }
        for (int64_t r = 0; r < valid; ++r)
          topk_row(s + r * n_pad, s + (RB + r) * n_pad, n, k, scratch[static_cast<size_t>(worker)],
                   out_scores + (r0 + r) * k, out_indices + (r0 + r) * k);
      }
    });
    return PEER_OK;
  });
}

PEER_API int peer_cartesian_topk_f32(const float* s1, const float* s2, int64_t rows, int64_t n, int64_t k,
                                     float* out_scores, int64_t* out_indices) {
  static const char* const fn = "peer_cartesian_topk_f32";
  return peer::guarded(fn, [&]() -> int {
    PEER_REQUIRE(s1, "%s: s1 is null", fn);
    PEER_REQUIRE(s2, "%s: s2 is null", fn);
    PEER_REQUIRE(out_scores, "%s: out_scores is null", fn);
    PEER_REQUIRE(out_indices, "%s: out_indices is null", fn);
    PEER_REQUIRE(rows > 0, "%s: rows must be positive, got %lld", fn, (long long)rows);
    PEER_REQUIRE(n > 0, "%s: n must be positive, got %lld", fn, (long long)n);
    PEER_REQUIRE(k > 0 && k <= n, "%s: k must be in [1, n = %lld], got %lld", fn, (long long)n, (long long)k);
    int64_t size;
    PEER_REQUIRE(peer::checked_mul(n, n, &size), "%s: n = %lld makes n*n keys overflow", fn, (long long)n);
    PEER_REQUIRE(peer::checked_mul(rows, n, &size), "%s: sizes too large (rows = %lld, n = %lld)", fn, (long long)rows,
                 (long long)n);

    const int64_t grain = 32;
    const int workers = peer::worker_count(rows, grain);
    std::vector<RowScratch> scratch;
    scratch.reserve(static_cast<size_t>(workers));
    for (int w = 0; w < workers; ++w) scratch.emplace_back(n, k);

    peer::parallel_for(rows, grain, workers, [&](int64_t lo, int64_t hi, int worker) {
      RowScratch& w = scratch[static_cast<size_t>(worker)];
      float* c1 = w.clean1.data();
      float* c2 = w.clean2.data();
      for (int64_t r = lo; r < hi; ++r) {
        const float* r1 = s1 + r * n;
        const float* r2 = s2 + r * n;
        for (int64_t i = 0; i < n; ++i) c1[i] = sanitise(r1[i]);
        for (int64_t i = 0; i < n; ++i) c2[i] = sanitise(r2[i]);
        topk_row(c1, c2, n, k, w, out_scores + r * k, out_indices + r * k);
      }
    });
    return PEER_OK;
  });
}

}  // extern "C"
