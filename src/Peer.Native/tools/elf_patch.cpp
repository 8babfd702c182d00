// peer-elf-patch: the command-line face of libpeer_glibcxx_compat's patch (include/peer_compat.h), for the CTest
// checks and for patching a copy by hand. Microsoft.ML.Peer itself patches at run time, not through this tool.

#include <cstdio>
#include <cstring>
#include <string>

#include "peer_compat.h"

namespace {

constexpr const char* kVersion = "GLIBCXX_3.4.32";
constexpr const char* kCompatName = "libpeer_glibcxx_compat.so";

enum ExitCode { kOk = 0, kNotPatched = 1, kError = 2 };

void Usage(FILE* out) {
    std::fprintf(out,
                 "usage: peer-elf-patch <libLibTorchSharp.so> [--if-needed | --force] [--check]\n"
                 "Makes the library load on a libstdc++ without %s (see compat/libtorchsharp_patch.cpp).\n"
                 "  (no option)   patch; refuses if the system libstdc++ already provides %s\n"
                 "  --if-needed   do nothing (exit 0) if the system libstdc++ provides %s\n"
                 "  --force       patch whatever the system libstdc++ provides\n"
                 "  --check       only report; exit 0 if patched or nothing to patch, 1 if a patch is needed\n"
                 "%s must be in the library's folder: the patched library loads it from $ORIGIN.\n",
                 kVersion, kVersion, kVersion, kCompatName);
}

int Fail(const std::string& message) {
    std::fprintf(stderr, "peer-elf-patch: error: %s\n", message.c_str());
    return kError;
}

std::string DirName(const std::string& path) {
    auto slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

}  // namespace

int main(int argc, char** argv) {
    std::string target;
    bool if_needed = false, force = false, check = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--if-needed") if_needed = true;
        else if (a == "--force") force = true;
        else if (a == "--check") check = true;
        else if (a == "-h" || a == "--help") { Usage(stdout); return kOk; }
        else if (!a.empty() && a[0] == '-') return Fail("unknown option " + a);
        else if (target.empty()) target = a;
        else return Fail("more than one library given");
    }
    if (target.empty()) { Usage(stderr); return kError; }
    if (if_needed && force) return Fail("--if-needed and --force exclude each other");

    int system_has = 0;
    if (peer_compat_system_has_glibcxx_3_4_32(&system_has) != PEER_COMPAT_OK) return Fail(peer_compat_last_error());
    if (!check && !force && system_has) {
        if (if_needed) {
            std::printf("peer-elf-patch: system libstdc++ provides %s; %s left unchanged\n", kVersion, target.c_str());
            return kOk;
        }
        return Fail(std::string("the system libstdc++ provides ") + kVersion +
                    ", so the patch is not needed; pass --force to patch anyway or --if-needed to accept");
    }

    int state = 0;
    if (peer_compat_inspect(target.c_str(), &state) != PEER_COMPAT_OK) return Fail(peer_compat_last_error());
    if (check) {
        if (state == PEER_COMPAT_NOT_NEEDED) {
            std::printf("%s: does not need %s; nothing to patch\n", target.c_str(), kVersion);
            return kOk;
        }
        std::printf("%s: %s (system libstdc++ %s %s)\n", target.c_str(),
                    state == PEER_COMPAT_PATCHED ? "patched" : "not patched", system_has ? "provides" : "lacks",
                    kVersion);
        return state == PEER_COMPAT_PATCHED ? kOk : kNotPatched;
    }
    if (state == PEER_COMPAT_NOT_NEEDED) {
        std::printf("peer-elf-patch: %s does not need %s; nothing to patch\n", target.c_str(), kVersion);
        return kOk;
    }

    std::string compat = DirName(target) + "/" + kCompatName;
    bool was_patched = state == PEER_COMPAT_PATCHED;
    if (peer_compat_patch(target.c_str(), compat.c_str(), &state) != PEER_COMPAT_OK) return Fail(peer_compat_last_error());
    if (was_patched) std::printf("peer-elf-patch: %s already patched\n", target.c_str());
    else std::printf("peer-elf-patch: patched %s: %s\n", target.c_str(), peer_compat_last_report());
    return kOk;
}
