/* peer-dlopen-check <library> [--unpatched]
   Loads the library with RTLD_NOW and calls peer_test_entry(), which must return 42.
   --unpatched: the library is the unpatched original, so loading must fail exactly when the
   system libstdc++ lacks GLIBCXX_3.4.32 (and succeed otherwise). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

static int system_has_version(void) {
    void* h = dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_LOCAL);
    if (h == NULL) return 0;
    int found = dlvsym(h, "_ZSt21ios_base_library_initv", "GLIBCXX_3.4.32") != NULL;
    dlclose(h);
    return found;
}

int main(int argc, char** argv) {
    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "--unpatched") != 0)) {
        fprintf(stderr, "usage: peer-dlopen-check <library> [--unpatched]\n");
        return 2;
    }
    int expect_load = argc == 2 || system_has_version();
    void* h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        const char* err = dlerror();
        if (!expect_load && strstr(err, "GLIBCXX_3.4.32") != NULL) {
            printf("load failed as expected without GLIBCXX_3.4.32: %s\n", err);
            return 0;
        }
        fprintf(stderr, "dlopen failed: %s\n", err);
        return 1;
    }
    if (!expect_load) {
        fprintf(stderr, "%s loaded although the system libstdc++ lacks GLIBCXX_3.4.32\n", argv[1]);
        return 1;
    }
    int (*entry)(void) = (int (*)(void))dlsym(h, "peer_test_entry");
    if (entry == NULL || entry() != 42) {
        fprintf(stderr, "peer_test_entry missing or wrong in %s\n", argv[1]);
        return 1;
    }
    printf("loaded %s and called peer_test_entry\n", argv[1]);
    return 0;
}
