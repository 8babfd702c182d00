using System.Diagnostics;

namespace Microsoft.ML.Peer.Tests;

/// <summary>Runs the native CTest suite (built by the library's build) so one test command covers both.</summary>
[TestClass]
public sealed class NativeTestSuite
{
    [TestMethod]
    [Timeout(300_000, CooperativeCancellation = true)]
    public void CTestSuitePasses()
    {
        if (!OperatingSystem.IsLinux()) Assert.Inconclusive("The native suite is built on Linux only.");
        var root = new DirectoryInfo(AppContext.BaseDirectory);
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "Peer.MLNet.sln"))) root = root.Parent;
        Assert.IsNotNull(root, "repository root (Peer.MLNet.sln) not found above the test output folder");
        var build = Path.Combine(root.FullName, "artifacts", "native", "build");
        Assert.IsTrue(File.Exists(Path.Combine(build, "CTestTestfile.cmake")),
            $"no CTest build at {build}: the library build should have made it");

        var start = new ProcessStartInfo("ctest", $"--test-dir \"{build}\" --output-on-failure")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true
        };
        using var ctest = Process.Start(start)!;
        var stdout = ctest.StandardOutput.ReadToEndAsync();
        var stderr = ctest.StandardError.ReadToEndAsync();
        ctest.WaitForExit();
        var output = stdout.Result + stderr.Result;
        Console.WriteLine(output);
        Assert.AreEqual(0, ctest.ExitCode, output);
        StringAssert.Contains(output, "100% tests passed");
    }
}
