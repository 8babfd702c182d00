// Stands in for libstdc++'s std::ios_base_library_init() (GLIBCXX_3.4.32, GCC 13) on older
// libstdc++. GCC 13's <iostream> references it, instead of defining a per-file ios_base::Init
// object, to make sure the standard streams are constructed; peer-elf-patch makes
// libLibTorchSharp.so load this library so the reference resolves here.

#include <ios>

namespace std {
__attribute__((visibility("default"))) void ios_base_library_init() {}
}  // namespace std

namespace {
// Constructs std::cout and friends when this library loads, which the symbol above promises;
// being a dependency, this runs before libLibTorchSharp.so's own initializers.
const std::ios_base::Init peer_ios_init;
}  // namespace
