using System.IO.Compression;
using System.Reflection;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Peer.Data;

/// <summary>
/// cl100k_base (GPT-4's BPE) compacted to a small vocabulary: the most frequent cl100k tokens of a training corpus,
/// the 256 single-byte tokens, and an end-of-text id. A cl100k token that was not kept is split into the longest kept
/// tokens that spell it (greedy from the left), with single-byte tokens only where no kept token matches.
/// </summary>
/// <remarks>
/// Why: a 100k-row embedding and softmax would dominate the compute and memory of a laptop-scale language model,
/// while a few thousand corpus-specific tokens cover nearly all of it. Keeping every single byte makes encoding
/// lossless (<c>Decode(Encode(s)) == s</c> for any well-formed string) and the vocabulary bounded, with no unknown token.
/// Ids: 0..255 are the bytes 0x00..0xFF, 256..256+K−1 the kept cl100k tokens by falling frequency, then
/// <see cref="EndOfTextId"/>.
/// <para>
/// Why split dropped tokens into kept tokens rather than bytes: dropped tokens are mostly rare words and word pieces
/// made of frequent pieces (" encouragement" → " encourage" + "ment", " highways" → " highway" + "s"). Spelled out as
/// bytes, a dropped token costs one id per byte; split into kept tokens it costs a few, so a model's fixed context
/// holds more text (measured on Brown: docs/ml-net-plugin.md, "The tokenizer's compaction").
/// Encoding stays lossless because every byte is still a token, and deterministic because the split depends only on
/// the kept ids. The split of each dropped cl100k id is computed once, on first use, and cached.
/// </para>
/// </remarks>
public sealed class CompactTokenizer
{
    /// <summary>Ids reserved after the kept tokens; currently only <see cref="EndOfTextId"/>.</summary>
    public const int ReservedTokenCount = 1;

    /// <summary>The text <see cref="Decode"/> writes for <see cref="EndOfTextId"/>; <see cref="Encode"/> spells this text as ordinary
    /// tokens.</summary>
    public const string EndOfTextMarker = "<|endoftext|>";

    private const int ByteTokenCount = 256;
    private static readonly byte[] Magic = "PCTK"u8.ToArray();
    private const int FormatVersion = 1;

    private static readonly Lazy<Cl100k> Base = new(Cl100k.Create, LazyThreadSafetyMode.ExecutionAndPublication);

    private readonly int[] _keptIds;
    private readonly int[] _baseToCompact; // cl100k id -> compact id, -1 when not kept
    private readonly byte[][] _compactBytes; // compact id -> bytes (byte and kept tokens)

    // Trie over the bytes of all compact tokens (the 256 single bytes and the kept tokens): node 0 is the root; the
    // child of node n for byte b is _trieChildren[(n << 8) | b]; _trieToken[n] is the compact id spelled by the path
    // to n, or -1 when that path is only a prefix of kept tokens. Its depth is the longest kept token's length.
    private readonly Dictionary<long, int> _trieChildren;
    private readonly int[] _trieToken;

    // cl100k id (ordinary or special) -> compact ids of its greedy split, filled on first use (see SplitOf). Written
    // by several threads at once at worst, each with the same content, so publishing without a lock is safe.
    // Nothing here is saved: the kept ids fully determine the trie and every split, so the save format is unchanged.
    private readonly int[]?[] _splitCache;

    private CompactTokenizer(int[] keptIds)
    {
        Cl100k cl = Base.Value;
        _keptIds = keptIds;
        _baseToCompact = new int[cl.TokenBytes.Length];
        Array.Fill(_baseToCompact, -1);
        _compactBytes = new byte[ByteTokenCount + keptIds.Length][];
        for (int b = 0; b < ByteTokenCount; b++)
        {
            _baseToCompact[cl.ByteToId[b]] = b;
            _compactBytes[b] = [(byte)b];
        }

        for (int i = 0; i < keptIds.Length; i++)
        {
            _baseToCompact[keptIds[i]] = ByteTokenCount + i;
            _compactBytes[ByteTokenCount + i] = cl.TokenBytes[keptIds[i]];
        }

        _trieChildren = new Dictionary<long, int>();
        var trieToken = new List<int> { -1 };
        for (int compact = 0; compact < _compactBytes.Length; compact++)
        {
            int node = 0;
            foreach (byte b in _compactBytes[compact])
            {
                long key = ((long)node << 8) | b;
                if (!_trieChildren.TryGetValue(key, out int child))
                {
                    child = trieToken.Count;
                    trieToken.Add(-1);
                    _trieChildren.Add(key, child);
                }

                node = child;
            }

            trieToken[node] = compact;
        }

        _trieToken = trieToken.ToArray();
        _splitCache = new int[]?[cl.IdLimit];
    }

    /// <summary>Number of ids: 256 byte tokens + kept cl100k tokens + reserved ids. Smaller than requested when the training texts have
    /// fewer distinct tokens.</summary>
    public int VocabularySize => ByteTokenCount + _keptIds.Length + ReservedTokenCount;

    /// <summary>Id that separates documents; never produced by <see cref="Encode"/>.</summary>
    public int EndOfTextId => ByteTokenCount + _keptIds.Length;

    /// <summary>The kept cl100k ids; compact id 256 + i is <c>KeptCl100kIds[i]</c>.</summary>
    public IReadOnlyList<int> KeptCl100kIds => _keptIds;

    /// <summary>
    /// Keeps the (<paramref name="vocabularySize"/> − 256 − <see cref="ReservedTokenCount"/>) most frequent multi-byte
    /// cl100k tokens of <paramref name="trainingTexts"/> (ties broken by lower cl100k id, so the result is deterministic).
    /// </summary>
    public static CompactTokenizer Build(IEnumerable<string> trainingTexts, int vocabularySize = 8192)
    {
        ArgumentNullException.ThrowIfNull(trainingTexts);
        const int Minimum = ByteTokenCount + ReservedTokenCount + 1;
        if (vocabularySize < Minimum)
        {
            throw new ArgumentOutOfRangeException(nameof(vocabularySize), vocabularySize,
                $"vocabularySize must be at least {Minimum}: 256 byte tokens + {ReservedTokenCount} reserved id(s) + at least one kept cl100k token.");
        }

        Cl100k cl = Base.Value;
        var counts = new long[cl.TokenBytes.Length];
        foreach (string text in trainingTexts)
        {
            if (text is null)
            {
                throw new ArgumentException("trainingTexts contains a null text.", nameof(trainingTexts));
            }

            foreach (int id in cl.Tokenizer.EncodeToIds(text))
            {
                // Single-byte tokens are always in; special tokens are spelled out (see Encode).
                if ((uint)id < (uint)counts.Length && cl.TokenBytes[id].Length > 1)
                {
                    counts[id]++;
                }
            }
        }

        int keep = vocabularySize - ByteTokenCount - ReservedTokenCount;
        int[] kept = Enumerable.Range(0, counts.Length)
            .Where(id => counts[id] > 0)
            .OrderByDescending(id => counts[id])
            .ThenBy(id => id)
            .Take(keep)
            .ToArray();
        return new CompactTokenizer(kept);
    }

    /// <summary>Encodes text losslessly; never returns <see cref="EndOfTextId"/>.</summary>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.Length == 0)
        {
            return [];
        }

        var result = new List<int>(text.Length / 3 + 4);
        // cl100k's BPE costs the square of a pre-token's length, and a run without whitespace (a letter run, a punctuation
        // run) is one pre-token: 'a' × 160k took 27 s. Such runs are encoded MaxRunLength characters at a time, so encoding
        // is linear in the text; text without a run that long (any ordinary prose, mail, URL) is encoded exactly as before.
        int pieceStart = 0, runStart = 0;
        for (int i = 0; i <= text.Length; i++)
        {
            if (i < text.Length && !char.IsWhiteSpace(text[i]))
            {
                if (i - runStart + 1 > MaxRunLength && !char.IsLowSurrogate(text[i]))
                {
                    EncodePiece(text.AsSpan(pieceStart, i - pieceStart), result);
                    pieceStart = runStart = i;
                }
                continue;
            }
            runStart = i + 1;
        }
        EncodePiece(text.AsSpan(pieceStart), result);
        return result.ToArray();
    }

    /// <summary>Longest run of non-whitespace characters encoded in one piece (see <see cref="Encode"/>).</summary>
    internal const int MaxRunLength = 256;

    /// <summary>Characters this thread has passed to <see cref="Encode"/>: the work done, for tests that bound it.</summary>
    [ThreadStatic]
    internal static long CharactersEncoded;

    private void EncodePiece(ReadOnlySpan<char> piece, List<int> result)
    {
        if (piece.IsEmpty) return;
        CharactersEncoded += piece.Length;
        Cl100k cl = Base.Value;
        IReadOnlyList<int> baseIds = cl.Tokenizer.EncodeToIds(piece.ToString());
        int[] map = _baseToCompact;
        foreach (int id in baseIds)
        {
            int compact = (uint)id < (uint)map.Length ? map[id] : -1;
            if (compact >= 0)
            {
                result.Add(compact);
            }
            else
            {
                // A dropped token, or a special token such as <|endoftext|> written in the text (kept as text, not as
                // a control id): its bytes split into the longest kept tokens.
                result.AddRange(SplitOf(id));
            }
        }
    }

    /// <summary>The compact ids that spell the cl100k token <paramref name="cl100kId"/> when it is not kept; cached.</summary>
    private int[] SplitOf(int cl100kId)
    {
        if ((uint)cl100kId >= (uint)_splitCache.Length)
        {
            throw new InvalidOperationException($"cl100k_base returned id {cl100kId}, which is neither an ordinary nor a special token.");
        }

        int[]? split = Volatile.Read(ref _splitCache[cl100kId]);
        if (split is null)
        {
            split = Split(Base.Value.BytesOf(cl100kId));
            Volatile.Write(ref _splitCache[cl100kId], split);
        }

        return split;
    }

    /// <summary>
    /// Splits bytes into compact tokens, greedily taking at each position the longest compact token that matches
    /// there. Every single byte is a token, so this always succeeds and the tokens' bytes join back to
    /// <paramref name="bytes"/>.
    /// </summary>
    private int[] Split(ReadOnlySpan<byte> bytes)
    {
        var split = new List<int>(bytes.Length);
        int start = 0;
        while (start < bytes.Length)
        {
            int best = bytes[start];
            int bestLength = 1;
            int node = 0;
            for (int i = start; i < bytes.Length && _trieChildren.TryGetValue(((long)node << 8) | bytes[i], out node); i++)
            {
                int token = _trieToken[node];
                if (token >= 0)
                {
                    best = token;
                    bestLength = i - start + 1;
                }
            }

            split.Add(best);
            start += bestLength;
        }

        return split.ToArray();
    }

    /// <summary>
    /// Decodes ids to text. Bytes are joined before UTF-8 decoding, so a character split over several tokens comes
    /// back whole; an incomplete or invalid sequence (possible in generated output) becomes U+FFFD.
    /// <see cref="EndOfTextId"/> is written as <see cref="EndOfTextMarker"/>.
    /// </summary>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var bytes = new List<byte>();
        var text = new StringBuilder();
        foreach (int id in ids)
        {
            if ((uint)id < (uint)_compactBytes.Length)
            {
                bytes.AddRange(_compactBytes[id]);
            }
            else if (id == EndOfTextId)
            {
                FlushUtf8(bytes, text);
                text.Append(EndOfTextMarker);
            }
            else
            {
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"Token id {id} is outside the vocabulary [0, {VocabularySize}).");
            }
        }

        FlushUtf8(bytes, text);
        return text.ToString();
    }

    /// <summary>Writes the tokenizer: magic "PCTK", int32 format version, int32 kept count, then the kept cl100k ids (little-endian
    /// int32).</summary>
    public void Save(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        // The kept ids fully determine the encoding, including how dropped tokens split into kept ones, so they are
        // all that is written; splitting dropped tokens into kept tokens rather than bytes needed no format change.
        using var writer = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        writer.Write(Magic);
        writer.Write(FormatVersion);
        writer.Write(_keptIds.Length);
        foreach (int id in _keptIds)
        {
            writer.Write(id);
        }
    }

    /// <summary>Reads a tokenizer written by <see cref="Save"/>.</summary>
    /// <exception cref="InvalidDataException">The stream is not a compact tokenizer, has an unsupported version, is truncated or
    /// inconsistent.</exception>
    public static CompactTokenizer Load(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        Cl100k cl = Base.Value;
        using var reader = new BinaryReader(stream, Encoding.UTF8, leaveOpen: true);
        try
        {
            byte[] magic = reader.ReadBytes(Magic.Length);
            if (magic.Length < Magic.Length)
            {
                throw new EndOfStreamException();
            }

            if (!magic.AsSpan().SequenceEqual(Magic))
            {
                throw new InvalidDataException(
                    $"Not a compact tokenizer file: expected magic 'PCTK', found '{Encoding.ASCII.GetString(magic)}' ({Convert.ToHexString(magic)}).");
            }

            int version = reader.ReadInt32();
            if (version != FormatVersion)
            {
                throw new InvalidDataException(
                    $"Unsupported compact tokenizer format version {version}; this build reads version {FormatVersion}.");
            }

            int count = reader.ReadInt32();
            int maxKept = cl.TokenBytes.Length - ByteTokenCount;
            if (count < 0 || count > maxKept)
            {
                throw new InvalidDataException($"Invalid compact tokenizer file: kept token count {count} is outside [0, {maxKept}].");
            }

            var kept = new int[count];
            var seen = new HashSet<int>();
            for (int i = 0; i < count; i++)
            {
                int id = reader.ReadInt32();
                if ((uint)id >= (uint)cl.TokenBytes.Length || cl.TokenBytes[id].Length < 2 || !seen.Add(id))
                {
                    throw new InvalidDataException(
                        $"Invalid compact tokenizer file: entry {i} ({id}) is not a distinct multi-byte cl100k token id.");
                }

                kept[i] = id;
            }

            return new CompactTokenizer(kept);
        }
        catch (EndOfStreamException ex)
        {
            throw new InvalidDataException("Compact tokenizer file is truncated.", ex);
        }
    }

    private static void FlushUtf8(List<byte> bytes, StringBuilder text)
    {
        if (bytes.Count > 0)
        {
            // Encoding.UTF8 replaces invalid sequences with U+FFFD rather than throwing.
            text.Append(Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes)));
            bytes.Clear();
        }
    }

    /// <summary>The shared cl100k_base tokenizer and its id-to-bytes table.</summary>
    private sealed class Cl100k
    {
        private const string DataAssembly = "Microsoft.ML.Tokenizers.Data.Cl100kBase";
        private const string DataResource = "cl100k_base.tiktoken.deflate";

        private readonly Dictionary<int, byte[]> _specialTokenBytes;

        private Cl100k(TiktokenTokenizer tokenizer, byte[][] tokenBytes, int[] byteToId)
        {
            Tokenizer = tokenizer;
            TokenBytes = tokenBytes;
            ByteToId = byteToId;
            _specialTokenBytes = (tokenizer.SpecialTokens ?? new Dictionary<string, int>())
                .ToDictionary(kv => kv.Value, kv => Encoding.UTF8.GetBytes(kv.Key));
            IdLimit = Math.Max(tokenBytes.Length, _specialTokenBytes.Count == 0 ? 0 : _specialTokenBytes.Keys.Max() + 1);
        }

        public TiktokenTokenizer Tokenizer { get; }

        /// <summary>cl100k id (rank) -> token bytes, for the ordinary (non-special) tokens.</summary>
        public byte[][] TokenBytes { get; }

        /// <summary>byte value -> cl100k id of the single-byte token.</summary>
        public int[] ByteToId { get; }

        /// <summary>One more than the largest id, ordinary or special.</summary>
        public int IdLimit { get; }

        /// <summary>The bytes of an ordinary token, or the UTF-8 text of a special token.</summary>
        public byte[] BytesOf(int id) =>
            (uint)id < (uint)TokenBytes.Length ? TokenBytes[id]
            : _specialTokenBytes.TryGetValue(id, out byte[]? bytes) ? bytes
            : throw new InvalidOperationException($"cl100k_base returned id {id}, which is neither an ordinary nor a special token.");

        public static Cl100k Create()
        {
            TiktokenTokenizer tokenizer = TiktokenTokenizer.CreateForModel("gpt-4");

            // The tokenizer keeps its id->bytes table internal, so read the same data file it was built from.
            Assembly assembly = Assembly.Load(new AssemblyName(DataAssembly));
            using Stream resource = assembly.GetManifestResourceStream(DataResource)
                ?? throw new InvalidOperationException(
                    $"The {DataAssembly} package has no '{DataResource}' resource; this version of it is not supported.");
            using var inflated = new DeflateStream(resource, CompressionMode.Decompress);
            using var reader = new StreamReader(inflated, Encoding.ASCII);

            // Lines are "base64" (rank = line index) or "base64 rank"; an optional "Capacity: N" header comes first.
            var byRank = new Dictionary<int, byte[]>(100_300);
            int index = 0;
            string? line;
            while ((line = reader.ReadLine()) is not null)
            {
                if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal))
                {
                    continue;
                }

                int space = line.IndexOf(' ');
                int rank = space < 0 ? index : int.Parse(line.AsSpan(space + 1), System.Globalization.CultureInfo.InvariantCulture);
                byRank[rank] = Convert.FromBase64String(space < 0 ? line : line[..space]);
                index++;
            }

            var tokenBytes = new byte[byRank.Count][];
            var byteToId = new int[ByteTokenCount];
            Array.Fill(byteToId, -1);
            for (int id = 0; id < tokenBytes.Length; id++)
            {
                if (!byRank.TryGetValue(id, out byte[]? bytes))
                {
                    throw new InvalidOperationException($"{DataResource}: token ranks are not contiguous (rank {id} is missing).");
                }

                tokenBytes[id] = bytes;
                if (bytes.Length == 1)
                {
                    byteToId[bytes[0]] = id;
                }
            }

            if (Array.IndexOf(byteToId, -1) >= 0)
            {
                throw new InvalidOperationException(
                    $"{DataResource}: not every single byte has its own token, so byte fallback is impossible.");
            }

            var cl = new Cl100k(tokenizer, tokenBytes, byteToId);
            cl.VerifyAgainstTokenizer();
            return cl;
        }

        /// <summary>Checks that the table read from the data file matches the ids the tokenizer produces.</summary>
        private void VerifyAgainstTokenizer()
        {
            const string Probe = "The quick brown fox, naïve café — 東京 🙂 1234567 \t\n";
            var bytes = new List<byte>();
            foreach (int id in Tokenizer.EncodeToIds(Probe))
            {
                if ((uint)id >= (uint)TokenBytes.Length)
                {
                    throw new InvalidOperationException($"cl100k_base produced id {id} outside the table read from {DataResource}.");
                }

                bytes.AddRange(TokenBytes[id]);
            }

            if (!bytes.SequenceEqual(Encoding.UTF8.GetBytes(Probe)))
            {
                throw new InvalidOperationException($"The cl100k_base table read from {DataResource} does not match the tokenizer's ids.");
            }
        }
    }
}
