/* Link-time stand-in for a GCC 13 libstdc++: exports std::ios_base_library_init() at
   GLIBCXX_3.4.32 under the soname libstdc++.so.6, so the test library records the same
   versioned need as TorchSharp's libLibTorchSharp.so. Never loaded at run time: no file in the
   build tree is named libstdc++.so.6, so the loader takes the system one. */
__attribute__((visibility("default"))) void _ZSt21ios_base_library_initv(void) {}
