// Memory advice for the expert tables: huge pages for storage that is read at random rows for a long time.
// The [N, d] tables are 1 GiB each and every slot reads a 1 KB row at a random address, so with 4 KiB pages nearly
// every row read also misses the TLB and pays a page walk (two-dimensional under virtualisation); with 2 MiB pages
// the walk is shorter and its entries stay cached.
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "peer_internal.h"

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace {

#if defined(__linux__)
constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
#ifndef MADV_COLLAPSE
constexpr int MADV_COLLAPSE = 25;  // Linux 6.1; older kernels reject it with EINVAL, which is fine for advice
#endif

// False when the administrator disabled transparent huge pages ("[never]"): the advice then does nothing.
bool transparent_hugepages_allowed() {
  std::FILE* f = std::fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
  if (!f) return false;  // kernel without THP
  char mode[128] = {};
  const size_t n = std::fread(mode, 1, sizeof(mode) - 1, f);
  std::fclose(f);
  mode[n] = '\0';
  return std::strstr(mode, "[never]") == nullptr;
}
#endif

}  // namespace

extern "C" {

PEER_API int peer_advise_hugepages(void* ptr, int64_t bytes, int64_t* advised_bytes) {
  static const char* const fn = "peer_advise_hugepages";
  return peer::guarded(fn, [&]() -> int {
    PEER_REQUIRE(bytes >= 0, "%s: bytes must be non-negative, got %lld", fn, (long long)bytes);
    PEER_REQUIRE(ptr || bytes == 0, "%s: ptr is null", fn);
    PEER_REQUIRE(!ptr || static_cast<uint64_t>(bytes) <= UINTPTR_MAX - reinterpret_cast<uintptr_t>(ptr),
                 "%s: range [ptr, ptr + %lld) wraps around the address space", fn, (long long)bytes);
    if (advised_bytes) *advised_bytes = 0;
#if defined(__linux__)
    if (bytes == 0) return PEER_OK;
    // Only whole huge pages inside the range: advice on the partial pages at either end would also cover memory
    // the caller does not own.
    const uintptr_t start = reinterpret_cast<uintptr_t>(ptr);
    const uintptr_t lo = (start + kHugePage - 1) & ~(kHugePage - 1);
    const uintptr_t hi = (start + static_cast<uintptr_t>(bytes)) & ~(kHugePage - 1);
    if (hi <= lo || !transparent_hugepages_allowed()) return PEER_OK;
    void* const base = reinterpret_cast<void*>(lo);
    const size_t length = hi - lo;
    // Memory faulted in later gets huge pages; EINVAL means a kernel without THP or a mapping that cannot have them
    // (file-backed, locked), where the advice simply does not apply.
    if (madvise(base, length, MADV_HUGEPAGE) != 0) return PEER_OK;
    // Pages already present (the tables are initialised before the advice) are collapsed now rather than after
    // khugepaged's slow scan. Failure (older kernel, no free huge pages) leaves them as they are; contents never
    // change. The two halves are collapsed on separate threads when possible: it is a 1 GiB copy per table.
    const int workers = peer::worker_count(static_cast<int64_t>(length / kHugePage), 64);
    peer::parallel_for(static_cast<int64_t>(length / kHugePage), 64, workers, [&](int64_t first, int64_t end, int) {
      (void)madvise(reinterpret_cast<void*>(lo + static_cast<uintptr_t>(first) * kHugePage),
                    static_cast<size_t>(end - first) * kHugePage, MADV_COLLAPSE);
    });
    if (advised_bytes) *advised_bytes = static_cast<int64_t>(length);
#endif
    return PEER_OK;
  });
}

}  // extern "C"
