using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Microsoft.ML.Peer.Native;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Tests.Native;

[TestClass]
public sealed class TorchSharpRuntimeTests
{
    private const int Unpatched = 1;

    [TestMethod]
    public void ThisProcessUsesAPatchedCopyExactlyWhenTheSystemLacksTheVersion()
    {
        if (!OperatingSystem.IsLinux()) Assert.Inconclusive("The repair concerns Linux only.");
        TorchSharpRuntime.EnsureLoadable();
        string original = Original();
        if (SystemHasGlibcxx3432())
        {
            Assert.IsNull(TorchSharpRuntime.PatchedLibraryPath, "nothing may be patched where libstdc++ is new enough");
        }
        else
        {
            string? patched = TorchSharpRuntime.PatchedLibraryPath;
            Assert.IsNotNull(patched, "this system lacks GLIBCXX_3.4.32, so TorchSharp can only run on a patched copy");
            StringAssert.StartsWith(patched, TorchSharpRuntime.CacheRoot());
            Assert.AreEqual(Unpatched, TorchSharpRuntime.CompatLibrary.Inspect(Compat(), original),
                "the application's own libLibTorchSharp.so must be left as the package made it");
        }
        using var sum = ones(3).sum();
        Assert.AreEqual(3f, sum.item<float>(), "TorchSharp works on whichever library was chosen");
    }

    [TestMethod]
    public void ConcurrentCallersShareOneVerifiedCopyAndLeaveTheOriginalAlone()
    {
        if (!OperatingSystem.IsLinux()) Assert.Inconclusive("The repair concerns Linux only.");
        string original = Original(), compat = Compat();
        byte[] before = SHA256.HashData(File.ReadAllBytes(original));
        string root = Path.Combine(Path.GetTempPath(), $"peer-runtime-cache-{Guid.NewGuid():N}");
        try
        {
            var paths = Enumerable.Range(0, 4).AsParallel().WithDegreeOfParallelism(4)
                .Select(_ => TorchSharpRuntime.PatchedCopy(original, compat, root)).ToArray();
            Assert.AreEqual(1, paths.Distinct().Count(), string.Join(", ", paths));
            Assert.AreEqual(2, TorchSharpRuntime.CompatLibrary.Inspect(compat, paths[0]), "the cached copy is patched");
            Assert.AreEqual(1, Directory.GetDirectories(root).Length, "one folder, and no staging folder left behind");
            CollectionAssert.AreEqual(before, SHA256.HashData(File.ReadAllBytes(original)));

            // A cache entry that lost a file (a user's clean-up) is rebuilt, not used.
            string folder = Path.GetDirectoryName(paths[0])!;
            File.Delete(Path.Combine(folder, "libpeer_glibcxx_compat.so"));
            Assert.AreEqual(paths[0], TorchSharpRuntime.PatchedCopy(original, compat, root));
            Assert.IsTrue(File.Exists(Path.Combine(folder, "libpeer_glibcxx_compat.so")));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [TestMethod]
    public void TheCompatLibraryRefusesWhatIsNotASharedObject()
    {
        if (!OperatingSystem.IsLinux()) Assert.Inconclusive("The repair concerns Linux only.");
        string file = Path.GetTempFileName();
        try
        {
            File.WriteAllText(file, "not a library");
            var e = Assert.Throws<InvalidDataException>(() => TorchSharpRuntime.CompatLibrary.Patch(Compat(), file, Compat()));
            StringAssert.Contains(e.Message, "not an ELF file");
            StringAssert.Contains(e.Message, file);
            Assert.AreEqual("not a library", File.ReadAllText(file), "a refused file is left as it was");
            e = Assert.Throws<InvalidDataException>(() => TorchSharpRuntime.CompatLibrary.Inspect(Compat(), file + ".missing"));
            StringAssert.Contains(e.Message, "cannot open");
        }
        finally
        {
            File.Delete(file);
        }
    }

    private static string Original() =>
        TorchSharpRuntime.FindNative("libLibTorchSharp.so", typeof(TorchSharp.torch).Assembly)
        ?? throw new AssertFailedException("libLibTorchSharp.so not found beside the tests");

    private static string Compat() =>
        TorchSharpRuntime.FindNative("libpeer_glibcxx_compat.so", typeof(TorchSharpRuntime).Assembly)
        ?? throw new AssertFailedException("libpeer_glibcxx_compat.so not found beside the tests");

    [DllImport("libc.so.6", EntryPoint = "dlvsym")]
    private static extern nint DlVSym(nint handle, string symbol, string version);

    /// <summary>Independent of the library under test: asks the loader itself.</summary>
    private static bool SystemHasGlibcxx3432()
    {
        nint libstdcxx = NativeLibrary.Load("libstdc++.so.6");
        return DlVSym(libstdcxx, "_ZSt21ios_base_library_initv", "GLIBCXX_3.4.32") != 0;
    }
}
