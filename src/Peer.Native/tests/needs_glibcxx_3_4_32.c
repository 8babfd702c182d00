/* Test library that calls std::ios_base_library_init()@GLIBCXX_3.4.32, as GCC 13 code would
   reference it. Calling it (unlike TorchSharp, which only references it) also checks that the
   patched library resolves the symbol from libpeer_glibcxx_compat.so under RTLD_NOW. */
extern void _ZSt21ios_base_library_initv(void);

__attribute__((visibility("default"))) int peer_test_entry(void) {
    _ZSt21ios_base_library_initv();
    return 42;
}
