// ELF patch behind include/peer_compat.h: lets TorchSharp's libLibTorchSharp.so load on a libstdc++ older than GCC 13.
//
// The library is built with GCC 13 headers, whose <iostream> references
// std::ios_base_library_init()@GLIBCXX_3.4.32. No relocation uses that symbol, but the version
// need alone makes the loader reject the library on libstdc++ <= 3.4.31 (e.g. Debian 12). The patch:
//   1. sets VER_FLG_WEAK on the GLIBCXX_3.4.32 need, so a missing version is no longer fatal;
//   2. makes every dynamic symbol bound to that version unversioned (VER_NDX_GLOBAL);
//   3. adds DT_NEEDED on libpeer_glibcxx_compat.so, which defines those symbols, in case any is bound.
// There is no room to grow .dynstr, so the new name is stored inside the DT_RUNPATH string by
// dropping trailing search-path entries (TorchSharp's are build-machine paths); $ORIGIN must stay.
// The file is rewritten atomically, and keeps its mode and timestamps.

#include "peer_compat.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "peer-elf-patch reads ELF structures in host byte order and supports little-endian hosts only"
#endif

namespace {

constexpr const char* kVersion = "GLIBCXX_3.4.32";
constexpr const char* kProbeSymbol = "_ZSt21ios_base_library_initv";
constexpr const char* kCompatName = "libpeer_glibcxx_compat.so";

struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

std::vector<uint8_t> ReadFile(const std::string& path) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(Errno("cannot open " + path));
    std::vector<uint8_t> bytes;
    uint8_t buf[1 << 16];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            int saved = errno;
            close(fd);
            errno = saved;
            throw Error(Errno("cannot read " + path));
        }
        if (n == 0) break;
        bytes.insert(bytes.end(), buf, buf + n);
    }
    close(fd);
    return bytes;
}

std::string DirName(const std::string& path) {
    auto slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

std::string BaseName(const std::string& path) {
    auto slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Writes bytes next to path and renames over it, so readers never see a half-written library and
// a file shared through a hard or symbolic link (e.g. the NuGet cache) is never modified.
void WriteFileAtomically(const std::string& path, const std::vector<uint8_t>& bytes) {
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) throw Error(Errno("cannot stat " + path));
    std::string tmpl = DirName(path) + "/." + BaseName(path) + ".peer-elf-patch.XXXXXX";
    std::vector<char> name(tmpl.begin(), tmpl.end());
    name.push_back('\0');
    int fd = mkstemp(name.data());
    if (fd < 0) throw Error(Errno("cannot create a temporary file in " + DirName(path)));
    auto fail = [&](const std::string& what) {
        int saved = errno;
        close(fd);
        unlink(name.data());
        errno = saved;
        throw Error(Errno(what));
    };
    size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("cannot write " + std::string(name.data()));
        }
        done += static_cast<size_t>(n);
    }
    if (fchmod(fd, st.st_mode & 07777) != 0) fail("cannot set the mode of " + std::string(name.data()));
    // Keeping the original mtime (the size is unchanged too) lets MSBuild's Copy with
    // SkipUnchangedFiles treat the patched output as current instead of recopying it every build.
    const struct timespec times[2] = {st.st_atim, st.st_mtim};
    if (futimens(fd, times) != 0) fail("cannot set the timestamps of " + std::string(name.data()));
    if (fsync(fd) != 0) fail("cannot flush " + std::string(name.data()));
    if (close(fd) != 0) {
        int saved = errno;
        unlink(name.data());
        errno = saved;
        throw Error(Errno("cannot close " + std::string(name.data())));
    }
    if (rename(name.data(), path.c_str()) != 0) {
        int saved = errno;
        unlink(name.data());
        errno = saved;
        throw Error(Errno("cannot replace " + path));
    }
}

// A bounds-checked view of an ELF64 little-endian shared object, located through its section
// headers; the dynamic-table pointers are cross-checked against them.
class ElfFile {
public:
    ElfFile(std::string path, std::vector<uint8_t> bytes) : path_(std::move(path)), bytes_(std::move(bytes)) {
        if (bytes_.size() < sizeof(Elf64_Ehdr) || std::memcmp(bytes_.data(), ELFMAG, SELFMAG) != 0)
            Fail("not an ELF file");
        ehdr_ = Read<Elf64_Ehdr>(0);
        if (ehdr_.e_ident[EI_CLASS] != ELFCLASS64 || ehdr_.e_ident[EI_DATA] != ELFDATA2LSB)
            Fail("only ELF64 little-endian files are supported");
        if (ehdr_.e_type != ET_DYN) Fail("not a shared object (e_type is not ET_DYN)");
        if (ehdr_.e_shoff == 0 || ehdr_.e_shnum == 0) Fail("has no section headers");
        if (ehdr_.e_shentsize != sizeof(Elf64_Shdr)) Fail("unexpected section header size");
        CheckRange(ehdr_.e_shoff, uint64_t{ehdr_.e_shnum} * sizeof(Elf64_Shdr), "section header table");
        for (uint16_t i = 0; i < ehdr_.e_shnum; ++i)
            shdrs_.push_back(Read<Elf64_Shdr>(ehdr_.e_shoff + uint64_t{i} * sizeof(Elf64_Shdr)));

        dynamic_ = FindUnique(SHT_DYNAMIC, ".dynamic", true);
        dynsym_ = FindUnique(SHT_DYNSYM, ".dynsym", true);
        versym_ = FindUnique(SHT_GNU_versym, ".gnu.version", false);
        verneed_ = FindUnique(SHT_GNU_verneed, ".gnu.version_r", false);
        verdef_ = FindUnique(SHT_GNU_verdef, ".gnu.version_d", false);
        Elf64_Word link = shdrs_[dynamic_].sh_link;
        if (link == 0 || link >= shdrs_.size() || shdrs_[link].sh_type != SHT_STRTAB)
            Fail(".dynamic does not link to a string table");
        dynstr_ = static_cast<uint16_t>(link);
        for (uint16_t i = 0; i < shdrs_.size(); ++i) {
            const auto& s = shdrs_[i];
            if (s.sh_type != SHT_NULL && s.sh_type != SHT_NOBITS)
                CheckRange(s.sh_offset, s.sh_size, ("section " + std::to_string(i)).c_str());
            // Every user of .dynstr must be known, or overwriting part of it could corrupt a name.
            bool known = i == dynamic_ || i == dynsym_ || i == verneed_ || i == verdef_;
            if (s.sh_link == dynstr_ && !known && s.sh_type != SHT_NULL)
                Fail("section " + std::to_string(i) + " (type " + std::to_string(s.sh_type) +
                     ") references .dynstr in a way this tool does not understand");
        }
        if (shdrs_[dynsym_].sh_link != dynstr_) Fail(".dynsym does not use the .dynamic string table");
        if (shdrs_[dynsym_].sh_entsize != sizeof(Elf64_Sym) || shdrs_[dynsym_].sh_size % sizeof(Elf64_Sym) != 0)
            Fail("unexpected .dynsym entry size");
        if (shdrs_[dynamic_].sh_entsize != sizeof(Elf64_Dyn) || shdrs_[dynamic_].sh_size % sizeof(Elf64_Dyn) != 0)
            Fail("unexpected .dynamic entry size");
        if (versym_ != 0 && (shdrs_[versym_].sh_link != dynsym_ || shdrs_[versym_].sh_size != SymbolCount() * 2))
            Fail(".gnu.version does not match .dynsym");
        if (verneed_ != 0 && shdrs_[verneed_].sh_link != dynstr_) Fail(".gnu.version_r does not use .dynstr");
        if (verdef_ != 0 && shdrs_[verdef_].sh_link != dynstr_) Fail(".gnu.version_d does not use .dynstr");

        CheckDynamicPointer(DT_STRTAB, dynstr_, ".dynstr");
        CheckDynamicPointer(DT_SYMTAB, dynsym_, ".dynsym");
        if (versym_ != 0) CheckDynamicPointer(DT_VERSYM, versym_, ".gnu.version");
        if (verneed_ != 0) CheckDynamicPointer(DT_VERNEED, verneed_, ".gnu.version_r");
        if (verdef_ != 0) CheckDynamicPointer(DT_VERDEF, verdef_, ".gnu.version_d");
    }

    [[noreturn]] void Fail(const std::string& message) const { throw Error(path_ + ": " + message); }

    const std::string& path() const { return path_; }
    const std::vector<uint8_t>& bytes() const { return bytes_; }

    template <typename T>
    T Read(uint64_t offset) const {
        CheckRange(offset, sizeof(T), "a structure");
        T value;
        std::memcpy(&value, bytes_.data() + offset, sizeof(T));
        return value;
    }

    template <typename T>
    void Write(uint64_t offset, const T& value) {
        CheckRange(offset, sizeof(T), "a structure");
        std::memcpy(bytes_.data() + offset, &value, sizeof(T));
    }

    void CheckRange(uint64_t offset, uint64_t size, const char* what) const {
        if (offset > bytes_.size() || size > bytes_.size() - offset)
            Fail(std::string(what) + " lies outside the file (truncated or corrupt)");
    }

    const Elf64_Shdr& Section(uint16_t index) const { return shdrs_[index]; }
    uint16_t DynamicIndex() const { return dynamic_; }
    uint16_t DynstrIndex() const { return dynstr_; }
    uint16_t VersymIndex() const { return versym_; }
    uint16_t VerneedIndex() const { return verneed_; }
    uint16_t VerdefIndex() const { return verdef_; }

    uint64_t SymbolCount() const { return shdrs_[dynsym_].sh_size / sizeof(Elf64_Sym); }
    Elf64_Sym Symbol(uint64_t i) const { return Read<Elf64_Sym>(shdrs_[dynsym_].sh_offset + i * sizeof(Elf64_Sym)); }
    uint64_t VersymOffset(uint64_t i) const { return shdrs_[versym_].sh_offset + i * 2; }

    uint64_t DynamicCount() const { return shdrs_[dynamic_].sh_size / sizeof(Elf64_Dyn); }
    uint64_t DynamicOffset(uint64_t i) const { return shdrs_[dynamic_].sh_offset + i * sizeof(Elf64_Dyn); }
    Elf64_Dyn Dynamic(uint64_t i) const { return Read<Elf64_Dyn>(DynamicOffset(i)); }

    // Length of the NUL-terminated string at .dynstr offset `index`.
    uint64_t StringLength(uint64_t index) const {
        const auto& s = shdrs_[dynstr_];
        if (index >= s.sh_size) Fail("string offset " + std::to_string(index) + " lies outside .dynstr");
        const void* start = bytes_.data() + s.sh_offset + index;
        const void* nul = std::memchr(start, 0, s.sh_size - index);
        if (nul == nullptr) Fail("unterminated string in .dynstr");
        return static_cast<uint64_t>(static_cast<const uint8_t*>(nul) - static_cast<const uint8_t*>(start));
    }

    std::string String(uint64_t index) const {
        uint64_t len = StringLength(index);
        return std::string(reinterpret_cast<const char*>(bytes_.data() + shdrs_[dynstr_].sh_offset + index), len);
    }

private:
    uint16_t FindUnique(uint32_t type, const char* what, bool required) const {
        uint16_t found = 0;
        for (uint16_t i = 1; i < shdrs_.size(); ++i) {
            if (shdrs_[i].sh_type != type) continue;
            if (found != 0) Fail(std::string("has more than one ") + what + " section");
            found = i;
        }
        if (required && found == 0) Fail(std::string("has no ") + what + " section");
        return found;
    }

    void CheckDynamicPointer(int64_t tag, uint16_t section, const char* what) const {
        for (uint64_t i = 0; i < DynamicCount(); ++i) {
            Elf64_Dyn d = Dynamic(i);
            if (d.d_tag == DT_NULL) break;
            if (d.d_tag == tag && d.d_un.d_ptr != shdrs_[section].sh_addr)
                Fail(std::string("the dynamic table's pointer to ") + what + " disagrees with the section headers");
        }
    }

    std::string path_;
    std::vector<uint8_t> bytes_;
    Elf64_Ehdr ehdr_{};
    std::vector<Elf64_Shdr> shdrs_;
    uint16_t dynamic_ = 0, dynsym_ = 0, versym_ = 0, verneed_ = 0, verdef_ = 0, dynstr_ = 0;
};

bool IsStringTag(int64_t tag) {
    switch (tag) {
        case DT_NEEDED: case DT_SONAME: case DT_RPATH: case DT_RUNPATH: case DT_AUXILIARY:
        case DT_FILTER: case DT_CONFIG: case DT_DEPAUDIT: case DT_AUDIT:
            return true;
        default:
            return false;
    }
}

bool IsOriginEntry(const std::string& e) {
    return e == "$ORIGIN" || e == "$ORIGIN/" || e == "${ORIGIN}" || e == "${ORIGIN}/";
}

// Defined, exported dynamic symbols of a shared object (the compat library).
std::set<std::string> ExportedSymbols(const ElfFile& elf) {
    std::set<std::string> names;
    for (uint64_t i = 1; i < elf.SymbolCount(); ++i) {
        Elf64_Sym s = elf.Symbol(i);
        unsigned bind = ELF64_ST_BIND(s.st_info);
        unsigned vis = ELF64_ST_VISIBILITY(s.st_other);
        if (s.st_shndx != SHN_UNDEF && (bind == STB_GLOBAL || bind == STB_WEAK) &&
            (vis == STV_DEFAULT || vis == STV_PROTECTED))
            names.insert(elf.String(s.st_name));
    }
    return names;
}

struct State {
    bool has_need = false;           // the file needs kVersion at all
    std::string need_file;           // vn_file of that need (libstdc++.so.6)
    uint64_t vernaux_offset = 0;     // file offset of the Elf64_Vernaux
    uint16_t version_index = 0;      // vna_other
    bool weak = false;
    std::vector<uint64_t> bound;     // dynsym indices still bound to the version
    std::vector<std::string> bound_names;
    bool has_compat_needed = false;  // DT_NEEDED on the compat library present
    struct StringRef {
        uint64_t offset;
        std::string what;
        bool search_path;  // DT_RUNPATH/DT_RPATH
    };
    std::vector<StringRef> string_refs;  // every .dynstr reference, for overlap checks

    bool Patched() const { return !has_need || (weak && bound.empty() && has_compat_needed); }
};

State Inspect(const ElfFile& elf, const std::string& compat_name) {
    State st;
    for (uint64_t i = 0; i < elf.SymbolCount(); ++i)
        st.string_refs.push_back({elf.Symbol(i).st_name, "symbol name", false});
    for (uint64_t i = 0; i < elf.DynamicCount(); ++i) {
        Elf64_Dyn d = elf.Dynamic(i);
        if (d.d_tag == DT_NULL) break;
        if (!IsStringTag(d.d_tag)) continue;
        st.string_refs.push_back({d.d_un.d_val, "dynamic tag " + std::to_string(d.d_tag),
                                  d.d_tag == DT_RUNPATH || d.d_tag == DT_RPATH});
        if (d.d_tag == DT_NEEDED && elf.String(d.d_un.d_val) == compat_name) st.has_compat_needed = true;
    }

    if (elf.VerdefIndex() != 0) {
        const auto& sec = elf.Section(elf.VerdefIndex());
        uint64_t off = 0;
        for (uint64_t n = 0; n < sec.sh_info; ++n) {
            if (off > sec.sh_size || sizeof(Elf64_Verdef) > sec.sh_size - off) elf.Fail(".gnu.version_d is corrupt");
            auto vd = elf.Read<Elf64_Verdef>(sec.sh_offset + off);
            uint64_t aux = off + vd.vd_aux;
            for (uint16_t j = 0; j < vd.vd_cnt; ++j) {
                if (aux > sec.sh_size || sizeof(Elf64_Verdaux) > sec.sh_size - aux) elf.Fail(".gnu.version_d is corrupt");
                auto va = elf.Read<Elf64_Verdaux>(sec.sh_offset + aux);
                st.string_refs.push_back({va.vda_name, "version definition", false});
                if (va.vda_next == 0) break;
                aux += va.vda_next;
            }
            if (vd.vd_next == 0) break;
            off += vd.vd_next;
        }
    }

    if (elf.VerneedIndex() == 0) return st;
    const auto& sec = elf.Section(elf.VerneedIndex());
    uint64_t off = 0;
    for (uint64_t n = 0; n < sec.sh_info; ++n) {
        if (off > sec.sh_size || sizeof(Elf64_Verneed) > sec.sh_size - off) elf.Fail(".gnu.version_r is corrupt");
        auto vn = elf.Read<Elf64_Verneed>(sec.sh_offset + off);
        if (vn.vn_version != VER_NEED_CURRENT) elf.Fail(".gnu.version_r has an unknown revision");
        st.string_refs.push_back({vn.vn_file, "version need file", false});
        uint64_t aux = off + vn.vn_aux;
        for (uint16_t j = 0; j < vn.vn_cnt; ++j) {
            if (aux > sec.sh_size || sizeof(Elf64_Vernaux) > sec.sh_size - aux) elf.Fail(".gnu.version_r is corrupt");
            auto va = elf.Read<Elf64_Vernaux>(sec.sh_offset + aux);
            st.string_refs.push_back({va.vna_name, "version need", false});
            if (elf.String(va.vna_name) == kVersion) {
                if (st.has_need) elf.Fail(std::string("needs ") + kVersion + " more than once");
                st.has_need = true;
                st.need_file = elf.String(vn.vn_file);
                st.vernaux_offset = sec.sh_offset + aux;
                st.version_index = va.vna_other & 0x7fff;
                st.weak = (va.vna_flags & VER_FLG_WEAK) != 0;
            }
            if (va.vna_next == 0) break;
            aux += va.vna_next;
        }
        if (vn.vn_next == 0) break;
        off += vn.vn_next;
    }

    if (st.has_need) {
        if (elf.VersymIndex() == 0) elf.Fail("has version needs but no .gnu.version section");
        if (st.version_index < 2) elf.Fail(std::string("the ") + kVersion + " need has an invalid version index");
        for (uint64_t i = 0; i < elf.SymbolCount(); ++i) {
            auto v = elf.Read<uint16_t>(elf.VersymOffset(i));
            if ((v & 0x7fff) != st.version_index) continue;
            Elf64_Sym s = elf.Symbol(i);
            if (s.st_shndx != SHN_UNDEF) elf.Fail("a defined symbol carries a version-need index");
            st.bound.push_back(i);
            st.bound_names.push_back(elf.String(s.st_name));
        }
    }
    return st;
}

// Adds DT_NEEDED `name`, storing the string in the tail of DT_RUNPATH (or DT_RPATH). Returns the new
// search path for the report.
std::string AddNeeded(ElfFile& elf, const State& st, const std::string& name) {
    uint64_t count = elf.DynamicCount();
    uint64_t used = count;  // index of the terminating DT_NULL
    uint64_t runpath_slot = count, rpath_slot = count, last_needed = count;
    for (uint64_t i = 0; i < count; ++i) {
        Elf64_Dyn d = elf.Dynamic(i);
        if (d.d_tag == DT_NULL) { used = i; break; }
        if (d.d_tag == DT_NEEDED) last_needed = i;
        if (d.d_tag == DT_RUNPATH) runpath_slot = i;
        if (d.d_tag == DT_RPATH) rpath_slot = i;
    }
    // The loader ignores DT_RPATH when DT_RUNPATH exists, so edit the one it uses.
    uint64_t path_slot = runpath_slot != count ? runpath_slot : rpath_slot;
    if (used == count) elf.Fail(".dynamic has no DT_NULL terminator");
    if (used + 1 >= count)
        elf.Fail(".dynamic has no spare DT_NULL slot for a new DT_NEEDED (" + std::to_string(count) +
                 " slots, all used); GNU ld leaves spares by default (--spare-dynamic-tags), other linkers may not");
    if (path_slot == count)
        elf.Fail("has no DT_RUNPATH/DT_RPATH string whose space could hold the name " + name);

    uint64_t path_index = elf.Dynamic(path_slot).d_un.d_val;
    std::string path = elf.String(path_index);
    // Keep the longest prefix of whole entries that leaves room for "\0name\0" in the old bytes.
    size_t keep = 0;
    bool fits = false, has_origin = false;
    for (size_t start = 0; start <= path.size();) {
        size_t end = std::min(path.find(':', start), path.size());
        if (end + 1 + name.size() > path.size()) break;
        fits = true;
        keep = end;
        has_origin = has_origin || IsOriginEntry(path.substr(start, end - start));
        start = end + 1;
    }
    std::string kept = path.substr(0, keep);
    if (!fits)
        elf.Fail("its search path '" + path + "' is too short to also hold '" + name + "' (needs " +
                 std::to_string(std::min(path.find(':'), path.size()) + 1 + name.size()) + " bytes, has " +
                 std::to_string(path.size()) + ")");
    if (!has_origin)
        elf.Fail("after making room for '" + name + "', its search path '" + kept +
                 "' would not contain $ORIGIN, so the loader would not find the library beside it");

    // Bytes [path_index + kept.size(), path_index + path.size()) change; any other string starting
    // inside the old one (linkers share string tails) would change with them.
    for (const auto& ref : st.string_refs) {
        bool inside = ref.offset > path_index && ref.offset < path_index + path.size();
        if (inside || (ref.offset == path_index && !ref.search_path))
            elf.Fail("the " + ref.what + " at .dynstr offset " + std::to_string(ref.offset) +
                     " shares bytes with the search path string; refusing to overwrite it");
    }

    uint64_t base = elf.Section(elf.DynstrIndex()).sh_offset + path_index;
    std::vector<uint8_t> tail(path.size() - kept.size(), 0);
    std::memcpy(tail.data() + 1, name.data(), name.size());
    for (size_t i = 0; i < tail.size(); ++i) elf.Write<uint8_t>(base + kept.size() + i, tail[i]);
    uint64_t name_index = path_index + kept.size() + 1;

    // Insert after the existing DT_NEEDED entries (load order), shifting the rest down one slot.
    uint64_t insert_at = last_needed == count ? 0 : last_needed + 1;
    for (uint64_t i = used; i > insert_at; --i) elf.Write(elf.DynamicOffset(i), elf.Dynamic(i - 1));
    Elf64_Dyn needed{};
    needed.d_tag = DT_NEEDED;
    needed.d_un.d_val = name_index;
    elf.Write(elf.DynamicOffset(insert_at), needed);
    elf.Write(elf.DynamicOffset(used + 1), Elf64_Dyn{});
    return kept;
}

bool SystemHasVersion() {
    void* h = dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_LOCAL);
    if (h == nullptr) return false;
    bool found = dlvsym(h, kProbeSymbol, kVersion) != nullptr;
    dlclose(h);
    return found;
}

thread_local std::string last_error;
thread_local std::string last_report;

// Runs body, turning every exception into a status and a message: no C++ exception crosses the C ABI.
template <typename Body>
int Guard(Body body) {
    try {
        body();
        return PEER_COMPAT_OK;
    } catch (const std::invalid_argument& e) {
        last_error = e.what();
        return PEER_COMPAT_INVALID_ARGUMENT;
    } catch (const std::exception& e) {
        last_error = e.what();
        return PEER_COMPAT_FAILED;
    } catch (...) {
        last_error = "unknown error";
        return PEER_COMPAT_FAILED;
    }
}

void RequireArgument(bool ok, const char* message) {
    if (!ok) throw std::invalid_argument(message);
}

int StateOf(const State& st) {
    if (!st.has_need) return PEER_COMPAT_NOT_NEEDED;
    return st.Patched() ? PEER_COMPAT_PATCHED : PEER_COMPAT_UNPATCHED;
}

}  // namespace

extern "C" {

PEER_COMPAT_API int peer_compat_abi_version(void) { return 1; }

PEER_COMPAT_API const char* peer_compat_last_error(void) { return last_error.c_str(); }

PEER_COMPAT_API const char* peer_compat_last_report(void) { return last_report.c_str(); }

PEER_COMPAT_API int peer_compat_system_has_glibcxx_3_4_32(int* has) {
    return Guard([&] {
        RequireArgument(has != nullptr, "has is null");
        *has = SystemHasVersion() ? 1 : 0;
    });
}

PEER_COMPAT_API int peer_compat_inspect(const char* library_path, int* state) {
    return Guard([&] {
        RequireArgument(library_path != nullptr && *library_path != '\0', "library_path is null or empty");
        RequireArgument(state != nullptr, "state is null");
        std::string path = library_path;
        *state = StateOf(Inspect(ElfFile(path, ReadFile(path)), kCompatName));
    });
}

PEER_COMPAT_API int peer_compat_patch(const char* library_path, const char* compat_path, int* state) {
    return Guard([&] {
        RequireArgument(library_path != nullptr && *library_path != '\0', "library_path is null or empty");
        RequireArgument(compat_path != nullptr && *compat_path != '\0', "compat_path is null or empty");
        RequireArgument(state != nullptr, "state is null");
        std::string target = library_path;
        ElfFile elf(target, ReadFile(target));
        State st = Inspect(elf, kCompatName);
        last_report.clear();
        if (!st.has_need) {
            *state = PEER_COMPAT_NOT_NEEDED;
            return;
        }

        // The patched library loads the compat library, which must define every symbol that was bound to the version.
        std::string compat = compat_path;
        if (access(compat.c_str(), R_OK) != 0)
            throw Error(compat + " not found; the patched library would fail to load without it beside it");
        std::set<std::string> provided = ExportedSymbols(ElfFile(compat, ReadFile(compat)));
        for (const auto& n : st.bound_names) {
            if (provided.count(n) == 0)
                throw Error(target + ": symbol " + n + " needs " + kVersion + " but " + kCompatName +
                            " does not define it; extend src/Peer.Native/compat/glibcxx_compat.cpp");
        }
        if (st.Patched()) {
            *state = PEER_COMPAT_PATCHED;
            return;
        }

        std::string report;
        if (!st.weak) {
            auto aux = elf.Read<Elf64_Vernaux>(st.vernaux_offset);
            aux.vna_flags |= VER_FLG_WEAK;
            elf.Write(st.vernaux_offset, aux);
            report += std::string(kVersion) + " need marked weak";
        }
        for (uint64_t i : st.bound) elf.Write<uint16_t>(elf.VersymOffset(i), VER_NDX_GLOBAL);
        if (!st.bound.empty())
            report += (report.empty() ? "" : ", ") + std::to_string(st.bound.size()) + " symbol(s) made unversioned";
        if (!st.has_compat_needed) {
            std::string kept = AddNeeded(elf, st, kCompatName);
            report += (report.empty() ? "" : ", ") + std::string("DT_NEEDED ") + kCompatName +
                      " added (search path now '" + kept + "')";
        }

        // Re-read what would be written, so a logic error can never leave a half-patched library.
        State after = Inspect(ElfFile(target, elf.bytes()), kCompatName);
        if (!after.Patched()) throw Error(target + ": internal error: the patched image does not verify");

        WriteFileAtomically(target, elf.bytes());
        last_report = report;
        *state = PEER_COMPAT_PATCHED;
    });
}

}  // extern "C"
