using System.Diagnostics;
using System.IO.Compression;
using System.Text;

namespace Microsoft.ML.Peer.Tests;

/// <summary>
/// The library as a user gets it, outside this repository: packs it into a temporary feed, makes console projects in a
/// temporary folder with <c>dotnet new console</c> and the README's <c>dotnet add package</c> lines, and runs a program
/// (PackageConsumer/Program.cs) that fits, evaluates and saves a PEER classifier and reloads it in a second process
/// with identical scores: from the package, from its <c>dotnet publish</c> output, and through a ProjectReference.
/// Fails when the package lacks the native kernels (the program reports the managed fallback) or the TorchSharp repair
/// (on a system whose libstdc++ lacks GLIBCXX_3.4.32 the program cannot start TorchSharp).
/// </summary>
[TestClass]
public sealed class PackageConsumerTests
{
#if DEBUG
    private const string Configuration = "Debug";
#else
    private const string Configuration = "Release";
#endif

    [TestMethod]
    [Timeout(1_200_000, CooperativeCancellation = true)]
    public void PackageAndProjectReferenceWorkOutsideTheRepository()
    {
        string repo = RepositoryRoot();
        string work = Path.Combine(Path.GetTempPath(), $"peer-consumer-{Guid.NewGuid():N}");
        Directory.CreateDirectory(work);
        try
        {
            // A version of its own, so no copy of an earlier pack in any NuGet cache can stand in for this one.
            string suffix = $"consumer.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}";
            string feed = Path.Combine(work, "feed");
            Dotnet(repo, $"pack src/Microsoft.ML.Peer/Microsoft.ML.Peer.csproj -c {Configuration} --no-build -o \"{feed}\" -p:VersionSuffix={suffix}");
            string package =
                Directory.GetFiles(feed, "Microsoft.ML.Peer.*.nupkg").Single(p => !p.EndsWith(".snupkg", StringComparison.Ordinal));
            Assert.IsTrue(File.Exists(Path.ChangeExtension(package, ".snupkg")), "no symbol package beside the package");
            CheckPackageContents(package);
            string nugetConfig = NuGetConfig(feed, Path.Combine(work, "packages"));

            // 1. From the package, as the README tells a user.
            string app = NewConsole(work, "from-package", nugetConfig);
            Dotnet(app, "add package Microsoft.ML.Peer --prerelease");
            Dotnet(app, "add package TorchSharp-cpu --version 0.107.0");
            Dotnet(app, "build -c Release");
            string model = Path.Combine(work, "model.zip");
            var fitted = Run(app, "dotnet", $"bin/Release/net10.0/Consumer.dll fit \"{model}\"");
            StringAssert.Contains(fitted, "micro-accuracy");
            var scores = ScoreLines(fitted);
            Assert.AreEqual(20, scores.Count, fitted);
            CollectionAssert.AreEqual(scores, ScoreLines(Run(app, "dotnet", $"bin/Release/net10.0/Consumer.dll score \"{model}\"")),
                "a second process scored the reloaded model differently");

            // 2. Its dotnet publish output, run directly.
            string published = Path.Combine(work, "published");
            Dotnet(app, $"publish -c Release -o \"{published}\"");
            CollectionAssert.AreEqual(scores, ScoreLines(Run(published, Path.Combine(published, "Consumer"), $"score \"{model}\"")),
                "the published application scored the model differently");

            // 3. Through a ProjectReference to the library's project file.
            string projectApp = NewConsole(work, "from-project", nugetConfig);
            Dotnet(projectApp, $"add reference \"{Path.Combine(repo, "src", "Microsoft.ML.Peer", "Microsoft.ML.Peer.csproj")}\"");
            Dotnet(projectApp, "add package TorchSharp-cpu --version 0.107.0");
            Dotnet(projectApp, "build -c Release");
            string projectModel = Path.Combine(work, "project-model.zip");
            var projectScores = ScoreLines(Run(projectApp, "dotnet", $"bin/Release/net10.0/Consumer.dll fit \"{projectModel}\""));
            CollectionAssert.AreEqual(projectScores,
                ScoreLines(Run(projectApp, "dotnet", $"bin/Release/net10.0/Consumer.dll score \"{projectModel}\"")));
            CollectionAssert.AreEqual(scores, projectScores, "the same program trained differently through the ProjectReference");

            // 4. Without a backend package: a clear, catchable error naming the package to add.
            string bare = NewConsole(work, "no-backend", nugetConfig);
            Dotnet(bare, "add package Microsoft.ML.Peer --prerelease");
            Dotnet(bare, "build -c Release");
            var refused = Run(bare, "dotnet", $"bin/Release/net10.0/Consumer.dll check-backend \"{model}\"", expectedExit: 3);
            StringAssert.Contains(refused, "dotnet add package TorchSharp-cpu --version 0.107.0");
        }
        finally
        {
            try { Directory.Delete(work, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    private static void CheckPackageContents(string package)
    {
        using var zip = ZipFile.OpenRead(package);
        var names = zip.Entries.Select(e => e.FullName).ToHashSet();
        foreach (var expected in new[]
                 {
                     "lib/net10.0/Microsoft.ML.Peer.dll", "lib/net10.0/Microsoft.ML.Peer.xml", "README.md",
                     "runtimes/linux-x64/native/libpeer_native.so", "runtimes/linux-x64/native/libpeer_glibcxx_compat.so",
                 })
            Assert.IsTrue(names.Contains(expected), $"the package lacks {expected}; it has: {string.Join(", ", names.Order())}");
        Assert.IsFalse(names.Any(n => n.Contains("Datasets", StringComparison.Ordinal) || n.Contains("Tests", StringComparison.Ordinal)),
            $"the package carries something of the tests or datasets: {string.Join(", ", names.Order())}");
    }

    /// <summary>
    /// Adds the feed; keeps this test's extraction of the package in a folder of its own and takes every other package
    /// from the user's NuGet folder (as a fallback folder), so nothing is downloaded twice and no cache is left behind.
    /// </summary>
    private static string NuGetConfig(string feed, string packages)
    {
        string userPackages = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        return $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <config>
                <add key="globalPackagesFolder" value="{packages}" />
              </config>
              <fallbackPackageFolders>
                <add key="user" value="{userPackages}" />
              </fallbackPackageFolders>
              <packageSources>
                <add key="peer-local" value="{feed}" />
              </packageSources>
            </configuration>
            """;
    }

    private static string NewConsole(string work, string name, string nugetConfig)
    {
        string folder = Path.Combine(work, name);
        Directory.CreateDirectory(folder);
        Dotnet(folder, "new console -n Consumer -o .");
        File.WriteAllText(Path.Combine(folder, "nuget.config"), nugetConfig);
        File.Copy(Path.Combine(AppContext.BaseDirectory, "PackageConsumer", "Program.cs"), Path.Combine(folder, "Program.cs"),
            overwrite: true);
        return folder;
    }

    private static List<string> ScoreLines(string output)
    {
        StringAssert.Contains(output, "native kernels True",
            "the consumer ran on the managed kernels: the package's libpeer_native did not load");
        return output.Split('\n').Select(l => l.TrimEnd('\r')).Where(l => l.StartsWith("score ", StringComparison.Ordinal)).ToList();
    }

    private static void Dotnet(string folder, string arguments) => Run(folder, "dotnet", arguments);

    private static string Run(string folder, string program, string arguments, int expectedExit = 0)
    {
        if (program == "dotnet") program = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet";
        var start = new ProcessStartInfo(program, arguments)
        {
            WorkingDirectory = folder,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        // A user's shell, not this test host's: MSBuild's variables from `dotnet test` would steer the child builds.
        foreach (var key in start.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase)).ToList())
            start.Environment.Remove(key);
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        start.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        var output = new StringBuilder().Append(stdout.Result).Append(stderr.Result).ToString();
        Console.WriteLine(
            $"[{clock.Elapsed.TotalSeconds:F1} s] {Path.GetFileName(program)} {arguments} (in {folder}): exit {process.ExitCode}");
        Assert.AreEqual(expectedExit, process.ExitCode, $"{program} {arguments} in {folder}:\n{output}");
        Assert.IsFalse(stderr.Result.Contains("managed PEER kernels", StringComparison.Ordinal),
            $"the native kernels did not load:\n{output}");
        return stdout.Result;
    }

    private static string RepositoryRoot()
    {
        var root = new DirectoryInfo(AppContext.BaseDirectory);
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "Peer.MLNet.sln"))) root = root.Parent;
        Assert.IsNotNull(root, "repository root (Peer.MLNet.sln) not found above the test output folder");
        return root.FullName;
    }
}
