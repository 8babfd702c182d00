/* C ABI of libpeer_glibcxx_compat: what lets TorchSharp's libLibTorchSharp.so (built with GCC 13) load where the
   system libstdc++ lacks GLIBCXX_3.4.32 (Debian 12, Ubuntu 22.04). The library defines the one symbol behind that
   version (std::ios_base_library_init) and patches a copy of libLibTorchSharp.so so that the version need is weak,
   the symbols bound to it are unversioned, and it loads this library. Microsoft.ML.Peer calls it at run time on a
   copy in a per-user cache (Native/TorchSharpRuntime.cs); the peer-elf-patch tool calls it from the command line.
   Functions return a PEER_COMPAT_* status and on failure leave a message for peer_compat_last_error(). */
#ifndef PEER_COMPAT_H
#define PEER_COMPAT_H

#if defined(_WIN32)
#define PEER_COMPAT_API __declspec(dllexport)
#else
#define PEER_COMPAT_API __attribute__((visibility("default")))
#endif

#define PEER_COMPAT_OK 0
#define PEER_COMPAT_INVALID_ARGUMENT 1
#define PEER_COMPAT_FAILED 2

/* States of a library, from peer_compat_inspect. */
#define PEER_COMPAT_NOT_NEEDED 0  /* the library does not need GLIBCXX_3.4.32 */
#define PEER_COMPAT_UNPATCHED 1   /* it needs it and is not patched */
#define PEER_COMPAT_PATCHED 2     /* it needs it and is patched */

#ifdef __cplusplus
extern "C" {
#endif

/* Returns 1; bumped whenever a signature or meaning below changes. */
PEER_COMPAT_API int peer_compat_abi_version(void);

/* Message of the last call on this thread that failed ("" if none). */
PEER_COMPAT_API const char* peer_compat_last_error(void);

/* What the last successful peer_compat_patch on this thread did, in words (e.g. "GLIBCXX_3.4.32 need marked weak,
   1 symbol(s) made unversioned, DT_NEEDED libpeer_glibcxx_compat.so added"); "" if it changed nothing. */
PEER_COMPAT_API const char* peer_compat_last_report(void);

/* *has = 1 when the libstdc++.so.6 this process loads defines std::ios_base_library_init@GLIBCXX_3.4.32, else 0. */
PEER_COMPAT_API int peer_compat_system_has_glibcxx_3_4_32(int* has);

/* *state = one of PEER_COMPAT_NOT_NEEDED / UNPATCHED / PATCHED for the ELF64 shared object at library_path. */
PEER_COMPAT_API int peer_compat_inspect(const char* library_path, int* state);

/* Patches library_path in place (a temporary file renamed over it; mode and timestamps kept). compat_path is the
   compat library the patched file will load; it must define every symbol bound to GLIBCXX_3.4.32. The patched
   library finds it through $ORIGIN, so it belongs in the same folder (or must be loaded before it).
   *state = the library's state after the call (PEER_COMPAT_NOT_NEEDED or PEER_COMPAT_PATCHED); already patched
   files are left unchanged. Patches whatever the system's libstdc++ provides: the caller decides whether to. */
PEER_COMPAT_API int peer_compat_patch(const char* library_path, const char* compat_path, int* state);

#ifdef __cplusplus
}
#endif

#endif
