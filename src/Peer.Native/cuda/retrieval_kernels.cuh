// Kernels and device code of retrieval.cu (see there for the method); host launchers stay in retrieval.cu.
#pragma once

#include "device_common.cuh"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 700
#error "peer_native_cuda needs sm_70 or newer (__match_any_sync, independent thread scheduling)"
#endif

namespace peer_cuda {
namespace {

using u64 = unsigned long long;

constexpr int kExtra = 32;  // collapse extras a half's list may take beyond its k entries

struct TopkLayout {
  size_t queries, scores, buffer, histogram, list_scores, list_indices, total;
};

__host__ __device__ inline size_t align16(size_t bytes) { return (bytes + 15) & ~static_cast<size_t>(15); }

// Dynamic shared memory of a block of rpb rows (key_dim 0: scores come precomputed). 16-byte aligned sections.
__host__ __device__ inline TopkLayout topk_layout(int rpb, int n, int key_dim, int k) {
  TopkLayout l{};
  size_t offset = 0;
  l.queries = offset;  // the block's query rows
  offset += align16(sizeof(float) * rpb * key_dim);
  l.scores = offset;  // per row: both halves' n scores, sanitised
  offset += align16(sizeof(float) * rpb * 2 * n);
  l.buffer = offset;  // per row: 64 keys being selected
  offset += align16(sizeof(u64) * rpb * 64);
  l.histogram = offset;  // per row: 256 radix bins
  offset += align16(sizeof(unsigned) * rpb * 256);
  l.list_scores = offset;  // per row and half: k kept entries, then the collapse extras
  offset += align16(sizeof(float) * rpb * 2 * (k + kExtra));
  l.list_indices = offset;
  offset += align16(sizeof(int) * rpb * 2 * (k + kExtra));
  l.total = offset;
  return l;
}

__device__ __forceinline__ float sanitise(float v) { return v == v ? v : -__int_as_float(0x7f800000); }

__device__ __forceinline__ u64 make_key(float score, unsigned index) {
  unsigned bits = __float_as_uint(sanitise(score));
  if ((bits << 1) == 0) bits = 0;  // -0 ranks as +0, so the tie falls to the index
  bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<u64>(bits) << 32) | static_cast<u64>(0xffffffffu - index);
}

__device__ __forceinline__ float key_score(u64 key) {
  unsigned bits = static_cast<unsigned>(key >> 32);
  bits = (bits & 0x80000000u) ? (bits & 0x7fffffffu) : ~bits;
  return __uint_as_float(bits);
}

__device__ __forceinline__ unsigned key_index(u64 key) { return 0xffffffffu - static_cast<unsigned>(key); }

// Real keys are never 0 (indices are < 2^24, so the low word is not 0), so 0 pads and sorts last.

// Sorts the warp's 64 keys (position lane in low, lane+32 in high) descending.
__device__ __forceinline__ void warp_sort64_descending(u64& low, u64& high) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int size = 2; size <= 64; size <<= 1) {
#pragma unroll
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      if (stride == 32) {  // only in the final merge, where every block runs descending
        const u64 a = low, b = high;
        low = a > b ? a : b;
        high = a > b ? b : a;
      } else {
        const u64 other_low = __shfl_xor_sync(kFullMask, low, stride);
        const u64 other_high = __shfl_xor_sync(kFullMask, high, stride);
        // The lower position of a descending block, or the upper one of an ascending block, keeps the larger key.
        const bool lower = (lane & stride) == 0;
        const bool low_max = lower == ((lane & size) == 0), high_max = lower == (((lane + 32) & size) == 0);
        low = (low_max == (low > other_low)) ? low : other_low;
        high = (high_max == (high > other_high)) ? high : other_high;
      }
    }
  }
}

// Exact k-th largest of the unique keys get(0..count) by 8-bit radix passes; returns it with its unresolved low bits
// zero, so exactly k keys are >= the result. histogram: the warp's 256 bins.
template <class GetKey>
__device__ u64 radix_kth_key(const GetKey& get, int count, int k, unsigned* histogram) {
  const int lane = threadIdx.x & 31;
  u64 prefix = 0, mask = 0;
  unsigned remaining = static_cast<unsigned>(k);
  for (int shift = 56; shift >= 0; shift -= 8) {
    __syncwarp();
    for (int bin = lane; bin < 256; bin += 32) histogram[bin] = 0;
    __syncwarp();
    for (int base = 0; base < count; base += 32) {
      const int i = base + lane;
      bool take = false;
      unsigned digit = 0;
      if (i < count) {
        const u64 key = get(i);
        take = (key & mask) == prefix;
        digit = static_cast<unsigned>(key >> shift) & 255u;
      }
      // One lane per distinct digit adds for all its peers: no atomics, no same-bin contention. Lanes not taking
      // part match on 256, which no digit equals.
      const unsigned peers = __match_any_sync(kFullMask, take ? digit : 256u);
      if (take && lane == __ffs(peers) - 1) histogram[digit] += __popc(peers);
    }
    __syncwarp();
    // Lane l holds digits 255-8l down to 248-8l; a scan over lanes counts the keys above each digit.
    unsigned bins[8], local = 0;
#pragma unroll
    for (int q = 0; q < 8; ++q) {
      bins[q] = histogram[255 - 8 * lane - q];
      local += bins[q];
    }
    unsigned inclusive = local;
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
      const unsigned value = __shfl_up_sync(kFullMask, inclusive, offset);
      if (lane >= offset) inclusive += value;
    }
    const unsigned exclusive = inclusive - local;
    const int owner = __ffs(__ballot_sync(kFullMask, exclusive < remaining && inclusive >= remaining)) - 1;
    unsigned digit = 0, above = 0, in_bin = 0;
    if (lane == owner) {
      unsigned running = exclusive;
#pragma unroll
      for (int q = 0; q < 8; ++q) {
        if (in_bin == 0 && running + bins[q] >= remaining) {
          digit = 255 - 8 * lane - q;
          above = running;
          in_bin = bins[q];
        }
        running += bins[q];
      }
    }
    digit = __shfl_sync(kFullMask, digit, owner);
    above = __shfl_sync(kFullMask, above, owner);
    in_bin = __shfl_sync(kFullMask, in_bin, owner);
    prefix |= static_cast<u64>(digit) << shift;
    mask |= static_cast<u64>(255u) << shift;
    remaining -= above;
    if (in_bin == remaining) break;  // the whole bin is in
  }
  return prefix;
}

// Writes to buffer[lane], buffer[lane+32] the keys >= bound in index order (at most 64 of them kept); returns how many
// there are in all.
template <class GetKey>
__device__ int gather_at_least(const GetKey& get, int count, u64 bound, u64* buffer) {
  const int lane = threadIdx.x & 31;
  int found = 0;
  for (int base = 0; base < count; base += 32) {
    const int i = base + lane;
    u64 key = 0;
    bool selected = false;
    if (i < count) {
      key = get(i);
      selected = key >= bound;
    }
    const unsigned ballot = __ballot_sync(kFullMask, selected);
    const int at = found + __popc(ballot & ((1u << lane) - 1u));
    if (selected && at < 64) buffer[at] = key;
    found += __popc(ballot);
  }
  __syncwarp();
  return found;
}

// The k (1 <= k <= 64, k <= count) largest of the unique keys get(0..count) into buffer[0..k), descending.
template <class GetKey>
__device__ void warp_select_topk(const GetKey& get, int count, int k, unsigned* histogram, u64* buffer) {
  const int lane = threadIdx.x & 31;
  // Each lane's best two keys are 64 distinct keys holding at least k real ones, so their k-th is a lower bound on the
  // k-th overall; usually few keys reach it.
  u64 first = 0, second = 0;
  for (int i = lane; i < count; i += 32) {
    const u64 key = get(i);
    if (key > first) {
      second = first;
      first = key;
    } else if (key > second) {
      second = key;
    }
  }
  warp_sort64_descending(first, second);
  u64 bound = __shfl_sync(kFullMask, k <= 32 ? first : second, (k - 1) & 31);
  int found = gather_at_least(get, count, bound, buffer);
  if (found > 64) {
    bound = radix_kth_key(get, count, k, histogram);
    found = gather_at_least(get, count, bound, buffer);  // exactly k
  }
  u64 low = lane < found ? buffer[lane] : 0, high = lane + 32 < found ? buffer[lane + 32] : 0;
  warp_sort64_descending(low, high);
  __syncwarp();
  if (lane < k) buffer[lane] = low;
  if (lane + 32 < k) buffer[lane + 32] = high;
  __syncwarp();
}

__device__ __forceinline__ float warp_max(float value) {
  for (int offset = 16; offset > 0; offset >>= 1) value = fmaxf(value, __shfl_xor_sync(kFullMask, value, offset));
  return value;
}

// One half's list: its top k (ranked), then the excluded entries a that a kept a' could tie through a collapse
// (a' > a, 0 < s[a'] - s[a] <= delta), as extend_for_collapses on the CPU. Returns the length, or -1 past kExtra.
__device__ int select_half(const float* s, int n, int k, float delta, unsigned* histogram, u64* buffer,
                           float* list_scores, int* list_indices) {
  const int lane = threadIdx.x & 31;
  warp_select_topk([s](int i) { return make_key(s[i], static_cast<unsigned>(i)); }, n, k, histogram, buffer);
  for (int j = lane; j < k; j += 32) {
    list_scores[j] = key_score(buffer[j]);
    list_indices[j] = static_cast<int>(key_index(buffer[j]));
  }
  __syncwarp();
  if (k == n) return k;
  const u64 kth_key = buffer[k - 1];
  const float kth = list_scores[k - 1], best = list_scores[0];
  int extra = 0;
  for (int base = 0; base < n; base += 32) {
    const int a = base + lane;
    bool add = false;
    float sa = 0.0f;
    if (a < n) {
      sa = s[a];
      if (make_key(sa, static_cast<unsigned>(a)) < kth_key && !(sa < kth - delta) && best > sa)
        for (int j = 0; j < k && !add; ++j)
          add = list_indices[j] > a && list_scores[j] > sa && !(list_scores[j] > sa + delta);
    }
    const unsigned ballot = __ballot_sync(kFullMask, add);
    const int at = extra + __popc(ballot & ((1u << lane) - 1u));
    if (add && at < kExtra) {
      list_scores[k + at] = sa;
      list_indices[k + at] = a;
    }
    extra += __popc(ballot);
  }
  __syncwarp();
  return extra > kExtra ? -1 : k + extra;
}

// Top k of one row from its sanitised half scores s1, s2 [n] (shared memory), by the calling warp. Not inlined: one
// copy serves every kernel instantiation (a call per row costs nothing here, and it keeps nvcc's compile time down).
__device__ __noinline__ void topk_row(const float* s1, const float* s2, int n, int k, unsigned* histogram, u64* buffer,
                         float* list_scores, int* list_indices, float* out_scores, int64_t* out_indices) {
  const int lane = threadIdx.x & 31;
  float max1 = 0.0f, max2 = 0.0f;
  for (int i = lane; i < n; i += 32) {
    max1 = fmaxf(max1, fabsf(s1[i]));
    max2 = fmaxf(max2, fabsf(s2[i]));
  }
  // Collapses need |s1[a'] - s1[a]| <= ulp of the sum <= 2^-23 (max|s1| + max|s2|) (1 + 2^-24) < delta.
  const float delta = (warp_max(max1) + warp_max(max2)) * 0x1p-20f;
  const int capacity = k + kExtra;
  const int len1 = select_half(s1, n, k, delta, histogram, buffer, list_scores, list_indices);
  const int len2 = select_half(s2, n, k, delta, histogram, buffer, list_scores + capacity, list_indices + capacity);
  if (len1 >= 0 && len2 >= 0) {
    const float* v1 = list_scores;
    const float* v2 = list_scores + capacity;
    const int* i1 = list_indices;
    const int* i2 = list_indices + capacity;
    const unsigned width = static_cast<unsigned>(len2), un = static_cast<unsigned>(n);
    warp_select_topk(
        [=](int c) {
          const unsigned a = static_cast<unsigned>(c) / width, b = static_cast<unsigned>(c) - a * width;
          return make_key(v1[a] + v2[b], static_cast<unsigned>(i1[a]) * un + static_cast<unsigned>(i2[b]));
        },
        len1 * len2, k, histogram, buffer);
  } else {
    const unsigned un = static_cast<unsigned>(n);
    warp_select_topk(
        [=](int c) {
          const unsigned a = static_cast<unsigned>(c) / un, b = static_cast<unsigned>(c) - a * un;
          return make_key(s1[a] + s2[b], static_cast<unsigned>(c));
        },
        n * n, k, histogram, buffer);
  }
  for (int j = lane; j < k; j += 32) {
    out_scores[j] = key_score(buffer[j]);
    out_indices[j] = static_cast<int64_t>(key_index(buffer[j]));
  }
}

struct RowScratch {
  unsigned* histogram;
  u64* buffer;
  float* list_scores;
  int* list_indices;
};

__device__ __forceinline__ RowScratch row_scratch(unsigned char* smem, const TopkLayout& layout, int warp, int k) {
  const int capacity = k + kExtra;
  return {reinterpret_cast<unsigned*>(smem + layout.histogram) + warp * 256,
          reinterpret_cast<u64*>(smem + layout.buffer) + warp * 64,
          reinterpret_cast<float*>(smem + layout.list_scores) + warp * 2 * capacity,
          reinterpret_cast<int*>(smem + layout.list_indices) + warp * 2 * capacity};
}

template <int RPB, bool VEC>
__global__ void __launch_bounds__(256)  // RPB <= 8 warps
    product_key_topk_kernel(const float* __restrict__ queries, const float* __restrict__ sub_keys, long long rows,
                            int n, int key_dim, int k, TopkLayout layout, float* __restrict__ out_scores,
                            int64_t* __restrict__ out_indices) {
  unsigned char* smem = dynamic_smem;
  float* q = reinterpret_cast<float*>(smem + layout.queries);
  float* scores = reinterpret_cast<float*>(smem + layout.scores);
  const int warp = threadIdx.x >> 5;
  const int half = key_dim / 2;
  const long long first = static_cast<long long>(blockIdx.x) * RPB;
  for (int r = 0; r < RPB; ++r) {
    const bool live = first + r < rows;
    for (int c = threadIdx.x; c < key_dim; c += blockDim.x)
      q[r * key_dim + c] = live ? queries[(first + r) * key_dim + c] : 0.0f;
  }
  __syncthreads();

  // Sub-key a of half t is column t*n + a; its scores against all RPB queries share one read of it.
  for (int column = threadIdx.x; column < 2 * n; column += blockDim.x) {
    const int table = column < n ? 0 : 1;
    const float* key = sub_keys + static_cast<size_t>(column) * half;
    const float* q_half = q + table * half;
    float acc[RPB];
#pragma unroll
    for (int r = 0; r < RPB; ++r) acc[r] = 0.0f;
    if (VEC) {
      for (int c = 0; c < half; c += 4) {
        const float4 kv = __ldg(reinterpret_cast<const float4*>(key + c));
#pragma unroll
        for (int r = 0; r < RPB; ++r) {
          const float4 qv = *reinterpret_cast<const float4*>(q_half + r * key_dim + c);
          acc[r] = fmaf(kv.x, qv.x, acc[r]);
          acc[r] = fmaf(kv.y, qv.y, acc[r]);
          acc[r] = fmaf(kv.z, qv.z, acc[r]);
          acc[r] = fmaf(kv.w, qv.w, acc[r]);
        }
      }
    } else {
      for (int c = 0; c < half; ++c) {
        const float kv = __ldg(key + c);
#pragma unroll
        for (int r = 0; r < RPB; ++r) acc[r] = fmaf(kv, q_half[r * key_dim + c], acc[r]);
      }
    }
#pragma unroll
    for (int r = 0; r < RPB; ++r) scores[r * 2 * n + column] = sanitise(acc[r]);
  }
  __syncthreads();

  const long long row = first + warp;
  if (row >= rows) return;
  const RowScratch w = row_scratch(smem, layout, warp, k);
  const float* s = scores + warp * 2 * n;
  topk_row(s, s + n, n, k, w.histogram, w.buffer, w.list_scores, w.list_indices, out_scores + row * k,
           out_indices + row * k);
}

// One warp per row, blockDim.x / 32 rows per block.
__global__ void __launch_bounds__(256)
    cartesian_topk_kernel(const float* __restrict__ s1, const float* __restrict__ s2, long long rows, int n, int k,
                          TopkLayout layout, float* __restrict__ out_scores, int64_t* __restrict__ out_indices) {
  unsigned char* smem = dynamic_smem;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const long long row = static_cast<long long>(blockIdx.x) * (blockDim.x >> 5) + warp;
  if (row >= rows) return;
  float* s = reinterpret_cast<float*>(smem + layout.scores) + warp * 2 * n;
  for (int i = lane; i < n; i += 32) {
    s[i] = sanitise(s1[row * n + i]);
    s[n + i] = sanitise(s2[row * n + i]);
  }
  __syncwarp();
  const RowScratch w = row_scratch(smem, layout, warp, k);
  topk_row(s, s + n, n, k, w.histogram, w.buffer, w.list_scores, w.list_indices, out_scores + row * k,
           out_indices + row * k);
}

}  // namespace
}  // namespace peer_cuda
