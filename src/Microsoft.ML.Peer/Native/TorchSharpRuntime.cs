using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using TorchSharp;

namespace Microsoft.ML.Peer.Native;

/// <summary>
/// Makes TorchSharp's native library load in any process that uses this assembly, with no step by the user.
/// TorchSharp 0.107's <c>libLibTorchSharp.so</c> needs <c>GLIBCXX_3.4.32</c> (GCC 13), which older Linux
/// distributions (Debian 12, Ubuntu 22.04) lack. Where the library does not load for that reason, a copy patched by
/// <c>libpeer_glibcxx_compat</c> (shipped beside the kernels) is kept in a per-user cache and handed to TorchSharp
/// instead; where it loads as it is, nothing is patched. This runs once, when the assembly is first used; a program
/// that calls TorchSharp before any Microsoft.ML.Peer type calls <see cref="EnsureLoadable"/> first.
/// </summary>
public static class TorchSharpRuntime
{
    internal const string BackendAdvice =
        "add a libtorch backend package to the application: `dotnet add package TorchSharp-cpu --version 0.107.0` " +
        "for the CPU, or TorchSharp-cuda-linux / TorchSharp-cuda-windows 0.107.0 for CUDA";

    private const string LibTorchSharpFile = "libLibTorchSharp.so";
    private const string CompatFile = "libpeer_glibcxx_compat.so";
    private const string MissingVersion = "GLIBCXX_3.4.32";
    private const int CompatAbiVersion = 1;

    private static readonly Lazy<Exception?> State = new(Prepare, LazyThreadSafetyMode.ExecutionAndPublication);
    private static nint patchedHandle;

    /// <summary>
    /// Prepares TorchSharp's native library (see the class summary), or throws <see cref="InvalidOperationException"/>
    /// saying what is missing, e.g. which libtorch backend package to add. Cheap after the first call.
    /// </summary>
    public static void EnsureLoadable()
    {
        // A new exception each time (one thrown object would collect every caller's stack); the cause, when there is
        // one beyond our own message, stays inside.
        if (State.Value is { } failure) throw new InvalidOperationException(failure.Message, failure.InnerException);
    }

    /// <summary>For the public modules' constructors: prepares TorchSharp before the TorchSharp base constructor runs.</summary>
    internal static string Prepared(string moduleName)
    {
        EnsureLoadable();
        return moduleName;
    }

    /// <summary>The patched copy in use, or null where TorchSharp's own library loads (or on another system).</summary>
    internal static string? PatchedLibraryPath { get; private set; }

#pragma warning disable CA2255 // A library's module initializer on purpose: it must run before TorchSharp initialises.
    [ModuleInitializer]
    internal static void OnAssemblyLoad() => _ = State.Value;
#pragma warning restore CA2255

    private static Exception? Prepare()
    {
        try
        {
            return PrepareCore();
        }
        catch (Exception e)
        {
            return new InvalidOperationException($"Microsoft.ML.Peer could not prepare TorchSharp's native library: {e.Message}", e);
        }
    }

    private static Exception? PrepareCore()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64) return null;
        Assembly torchAssembly = typeof(torch).Assembly;  // typeof does not run torch's static constructor

        // libtorch itself comes from the backend package the application chose; TorchSharp only brings its bindings. It is
        // looked for only where the application keeps its native files: the loader's default search would also find a
        // system libtorch (Debian's python3-torch installs libtorch 1.13 in /usr/lib), which is not TorchSharp's and
        // fails later with undefined symbols.
        string? backend = FindNative("libtorch_cpu.so", torchAssembly);
        if (backend is null || !NativeLibrary.TryLoad(backend, out _))
            return new InvalidOperationException(
                $"TorchSharp's native backend (libtorch_cpu.so) is not part of this application: {BackendAdvice}.");

        string? original = FindNative(LibTorchSharpFile, torchAssembly);
        if (original is null) return null;  // TorchSharp reports its own missing file
        string? loadError = TryLoad(original);
        if (loadError is null) return null;  // this system's libstdc++ is new enough: nothing to patch
        if (!loadError.Contains(MissingVersion, StringComparison.Ordinal))
            return new InvalidOperationException($"{original} does not load: {loadError}");

        string compat = FindNative(CompatFile, typeof(TorchSharpRuntime).Assembly)
            ?? throw new FileNotFoundException($"{original} needs {MissingVersion}, which this system's libstdc++ lacks, and {CompatFile}, which repairs that, is not beside Microsoft.ML.Peer (the package's runtimes/linux-x64/native/ folder).");
        string patched = PatchedCopy(original, compat, CacheRoot());

        // The copy lives apart from libtorch, so its dependencies are loaded first from where the application has them;
        // the loader then resolves the copy's DT_NEEDED entries to them by soname.
        foreach (var dependency in new[] { "libc10.so", "libtorch.so" })
        {
            if (FindNative(dependency, torchAssembly) is not { } path || !NativeLibrary.TryLoad(path, out _))
                return new InvalidOperationException(
                    $"TorchSharp's native backend ({dependency}) is not part of this application: {BackendAdvice}.");
        }
        patchedHandle = NativeLibrary.Load(patched);
        PatchedLibraryPath = patched;
        try
        {
            NativeLibrary.SetDllImportResolver(torchAssembly, ResolveLibTorchSharp);
        }
        catch (InvalidOperationException)
        {
            // Somebody else resolves TorchSharp's imports: answer only when the default probing fails (it fails on the
            // unpatched original).
            System.Runtime.Loader.AssemblyLoadContext.Default.ResolvingUnmanagedDll += (assembly, name) =>
                assembly == torchAssembly ? ResolveLibTorchSharp(name, assembly, null) : 0;
        }
        return null;
    }

    private static nint ResolveLibTorchSharp(string name, Assembly assembly, DllImportSearchPath? searchPath) =>
        name is "LibTorchSharp" or "libLibTorchSharp" or LibTorchSharpFile ? patchedHandle : 0;

    /// <summary>Null when the library loads, else the loader's message.</summary>
    private static string? TryLoad(string path)
    {
        try
        {
            NativeLibrary.Load(path);
            return null;
        }
        catch (DllNotFoundException e)
        {
            return e.Message;
        }
    }

    /// <summary>
    /// Where the runtime would find <paramref name="fileName"/> for <paramref name="assembly"/>: the application's native
    /// search folders (deps.json), the assembly's folder and its runtimes/linux-x64/native, and the package layout of
    /// the NuGet cache (hosts that load assemblies from there).
    /// </summary>
    internal static string? FindNative(string fileName, Assembly assembly)
    {
        var folders = new List<string>();
        if (AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") is string searchDirectories)
            folders.AddRange(searchDirectories.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries));
        string? assemblyFolder = string.IsNullOrEmpty(assembly.Location) ? null : Path.GetDirectoryName(assembly.Location);
        if (assemblyFolder is not null)
        {
            folders.Add(assemblyFolder);
            folders.Add(Path.Combine(assemblyFolder, "runtimes", "linux-x64", "native"));
            folders.Add(Path.Combine(assemblyFolder, "..", "..", "runtimes", "linux-x64", "native"));
        }
        return folders.Select(folder => Path.GetFullPath(Path.Combine(folder, fileName))).FirstOrDefault(File.Exists);
    }

    /// <summary>
    /// $PEER_RUNTIME_CACHE, else $XDG_CACHE_HOME/microsoft-ml-peer/runtime or ~/.cache/microsoft-ml-peer/runtime, else a
    /// folder under the temporary path (a home that cannot be written, as in some services).
    /// </summary>
    internal static string CacheRoot()
    {
        string? configured = Environment.GetEnvironmentVariable("PEER_RUNTIME_CACHE");
        if (!string.IsNullOrEmpty(configured)) return configured;
        string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        string? preferred = !string.IsNullOrEmpty(xdg) ? Path.Combine(xdg, "microsoft-ml-peer", "runtime")
            : !string.IsNullOrEmpty(home) ? Path.Combine(home, ".cache", "microsoft-ml-peer", "runtime") : null;
        if (preferred is not null)
        {
            try
            {
                Directory.CreateDirectory(preferred);
                return preferred;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
            }
        }
        return Path.Combine(Path.GetTempPath(), $"microsoft-ml-peer-{Environment.UserName}", "runtime");
    }

    /// <summary>
    /// A patched copy of <paramref name="original"/> (with <paramref name="compat"/> beside it) under
    /// <paramref name="cacheRoot"/>, in a folder named by the hash of both files, so a new TorchSharp or compat library
    /// gets a new copy. The folder is built under a temporary name and renamed into place, so concurrent processes
    /// never see half a copy.
    /// </summary>
    internal static string PatchedCopy(string original, string compat, string cacheRoot)
    {
        string key = CacheKey(original, compat);
        string folder = Path.Combine(cacheRoot, key);
        string target = Path.Combine(folder, LibTorchSharpFile);
        if (IsComplete(folder)) return target;

        Directory.CreateDirectory(cacheRoot);
        string staging = Path.Combine(cacheRoot, $".{key}.{Environment.ProcessId}.{Guid.NewGuid():N}");
        Directory.CreateDirectory(staging);
        try
        {
            File.Copy(compat, Path.Combine(staging, CompatFile));
            File.Copy(original, Path.Combine(staging, LibTorchSharpFile));
            int state = CompatLibrary.Patch(compat, Path.Combine(staging, LibTorchSharpFile), Path.Combine(staging, CompatFile));
            if (state != CompatLibrary.Patched)
                throw new InvalidDataException($"{original}: the patch left it in state {state}, not patched.");
            // Complete folders only ever appear by rename, so one that is there but incomplete lost a file afterwards: move
            // it aside (atomic, so a concurrent caller never deletes a copy another has just put in place) and replace it.
            if (Directory.Exists(folder) && !IsComplete(folder))
            {
                string broken = Path.Combine(cacheRoot, $".{key}.broken.{Guid.NewGuid():N}");
                try
                {
                    Directory.Move(folder, broken);
                    Directory.Delete(broken, recursive: true);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    // Another caller moved it first.
                }
            }
            Directory.Move(staging, folder);
        }
        catch (IOException) when (IsComplete(folder))
        {
            // Another process put the same copy in place first.
        }
        finally
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        }
        return target;

        bool IsComplete(string f) => File.Exists(Path.Combine(f, LibTorchSharpFile)) && File.Exists(Path.Combine(f, CompatFile))
            && CompatLibrary.Inspect(compat, Path.Combine(f, LibTorchSharpFile)) == CompatLibrary.Patched;
    }

    private static string CacheKey(string original, string compat)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(File.ReadAllBytes(original));
        hash.AppendData(File.ReadAllBytes(compat));
        hash.AppendData(BitConverter.GetBytes(CompatAbiVersion));
        return Convert.ToHexString(hash.GetHashAndReset(), 0, 12).ToLowerInvariant();
    }

    /// <summary>The C ABI of libpeer_glibcxx_compat (include/peer_compat.h), loaded by full path.</summary>
    internal static unsafe class CompatLibrary
    {
        internal const int NotNeeded = 0;
        internal const int Unpatched = 1;
        internal const int Patched = 2;

        private static readonly object Gate = new();
        private static readonly Dictionary<string, nint> Handles = new(StringComparer.Ordinal);

        internal static int Inspect(string compatPath, string libraryPath)
        {
            var inspect = (delegate* unmanaged<byte*, int*, int>)Export(compatPath, "peer_compat_inspect");
            int state = -1;
            int status;
            fixed (byte* path = NullTerminated(libraryPath))
            {
                status = inspect(path, &state);
            }
            return Checked(compatPath, status, state, "peer_compat_inspect", libraryPath);
        }

        internal static int Patch(string compatPath, string libraryPath, string compatBeside)
        {
            var patch = (delegate* unmanaged<byte*, byte*, int*, int>)Export(compatPath, "peer_compat_patch");
            int state = -1;
            int status;
            fixed (byte* path = NullTerminated(libraryPath))
            fixed (byte* beside = NullTerminated(compatBeside))
            {
                status = patch(path, beside, &state);
            }
            return Checked(compatPath, status, state, "peer_compat_patch", libraryPath);
        }

        private static int Checked(string compatPath, int status, int state, string function, string libraryPath)
        {
            if (status == 0) return state;
            var lastError = (delegate* unmanaged<byte*>)Export(compatPath, "peer_compat_last_error");
            throw new InvalidDataException(
                $"{function}({libraryPath}) failed with status {status}: {Marshal.PtrToStringUTF8((nint)lastError())}");
        }

        private static nint Export(string compatPath, string name)
        {
            nint handle;
            lock (Gate)
            {
                if (!Handles.TryGetValue(compatPath, out handle))
                {
                    handle = NativeLibrary.Load(compatPath);
                    var abi = (delegate* unmanaged<int>)NativeLibrary.GetExport(handle, "peer_compat_abi_version");
                    int version = abi();
                    if (version != CompatAbiVersion)
                        throw new InvalidDataException(
                            $"{compatPath} speaks ABI version {version}; this assembly needs {CompatAbiVersion}.");
                    Handles[compatPath] = handle;
                }
            }
            return NativeLibrary.GetExport(handle, name);
        }

        private static byte[] NullTerminated(string s) => System.Text.Encoding.UTF8.GetBytes(s + "\0");
    }
}
