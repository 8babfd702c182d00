// Sorted unique expert rows of a batch's slots and each slot's position among them: what the expert backward needs to
// sum gradients per touched row (torch.unique(sorted=True, return_inverse=True) gives the same), by a bitmap over the N
// rows instead of a sort. torch's sort-based unique of 262,144 slots took longer than the expert backward kernel itself.
#include <vector>

#include "peer_internal.h"

extern "C" {

PEER_API int peer_unique_rows(const int64_t* indices, int64_t count, int64_t N, int64_t* rows, int64_t* inverse,
                              int64_t* unique_count) {
  static const char* const fn = "peer_unique_rows";
  return peer::guarded(fn, [&]() -> int {
    PEER_REQUIRE(indices, "%s: indices is null", fn);
    PEER_REQUIRE(rows, "%s: rows is null", fn);
    PEER_REQUIRE(inverse, "%s: inverse is null", fn);
    PEER_REQUIRE(unique_count, "%s: unique_count is null", fn);
    PEER_REQUIRE(count > 0, "%s: count must be positive, got %lld", fn, (long long)count);
    PEER_REQUIRE(N > 0, "%s: N must be positive, got %lld", fn, (long long)N);
    // Checked before anything is written, so a rejected call changes nothing.
    for (int64_t i = 0; i < count; ++i)
      PEER_REQUIRE(indices[i] >= 0 && indices[i] < N, "%s: indices[%lld] = %lld is outside [0, N = %lld)", fn,
                   (long long)i, (long long)indices[i], (long long)N);

    const int64_t words = (N + 63) / 64;
    std::vector<uint64_t> bits(static_cast<size_t>(words), 0);
    for (int64_t i = 0; i < count; ++i) bits[indices[i] >> 6] |= uint64_t{1} << (indices[i] & 63);
    // rank[w]: set bits before word w, so a row's position is rank[w] + the set bits below it in its word.
    std::vector<int64_t> rank(static_cast<size_t>(words));
    int64_t total = 0;
    for (int64_t w = 0; w < words; ++w) {
      rank[w] = total;
      uint64_t word = bits[w];
      while (word) {
        rows[total++] = w * 64 + __builtin_ctzll(word);
        word &= word - 1;
      }
    }
    for (int64_t i = 0; i < count; ++i) {
      const int64_t e = indices[i];
      const uint64_t below = bits[e >> 6] & ((uint64_t{1} << (e & 63)) - 1);
      inverse[i] = rank[e >> 6] + __builtin_popcountll(below);
    }
    *unique_count = total;
    return PEER_OK;
  });
}

}  // extern "C"
