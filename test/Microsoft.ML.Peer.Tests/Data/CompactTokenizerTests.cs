using System.Text;
using Microsoft.ML.Peer.Data;
using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Peer.Tests;

[TestClass]
public sealed class CompactTokenizerTests
{
    private static readonly string[] Corpus =
    [
        "The cat sat on the mat. The dog sat on the log.",
        "The cat and the dog are friends; the cat likes the dog.",
        "On the mat, the cat sat; on the log, the dog sat.",
    ];

    private static CompactTokenizer Small => SmallTokenizer.Value;

    private static readonly Lazy<CompactTokenizer> SmallTokenizer = new(() => CompactTokenizer.Build(Corpus, vocabularySize: 300));

    private static readonly Lazy<TiktokenTokenizer> Cl100k = new(() => TiktokenTokenizer.CreateForModel("gpt-4"));

    /// <summary>Rare words, digits and non-Latin text: mostly cl100k tokens that a small vocabulary drops.</summary>
    private const string RareText =
        "The catalog of cats, dogmas and mathematics: a therapist's theory of logged matters, 1961-1962. " +
        "Antidisestablishmentarianism, naïve café, Straße, Ελληνικά, русский, 日本語のテキスト 🙂👍🏽 <|endoftext|> \t\r\n end";

    [TestMethod]
    [DataRow("The cat sat on the mat.")]
    [DataRow("Hello, World! 123 + 4.5e-6 = ?\tTabs\r\nand newlines\n\n")]
    [DataRow("Naïve café, Straße, Ελληνικά, русский, 日本語のテキスト, 한국어, עברית, العربية")]
    [DataRow("Emoji: 🙂👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 and a flag 🇫🇷")]
    [DataRow("<|endoftext|> written as text stays text")]
    [DataRow("   leading and trailing spaces   ")]
    [DataRow("\0 control \u0001\u007f chars")]
    public void RoundTripsAnyText(string text)
    {
        int[] ids = Small.Encode(text);

        Assert.AreEqual(text, Small.Decode(ids));
        Assert.IsTrue(ids.All(id => id >= 0 && id < Small.VocabularySize && id != Small.EndOfTextId));
    }

    [TestMethod]
    public void RareWordsAreSpelledOutAsBytesWithTinyVocabulary()
    {
        // 256 bytes + end-of-text + a single kept token (" the"), which the text does not contain: all bytes.
        CompactTokenizer tiny = CompactTokenizer.Build(Corpus, vocabularySize: 258);
        const string Rare = " antidisestablishmentarianism żółw 🦀";

        int[] ids = tiny.Encode(Rare);

        Assert.AreEqual(258, tiny.VocabularySize);
        Assert.AreEqual(257, tiny.EndOfTextId);
        CollectionAssert.AreEqual(Encoding.UTF8.GetBytes(Rare).Select(b => (int)b).ToArray(), ids);
        Assert.AreEqual(Rare, tiny.Decode(ids));
    }

    [TestMethod]
    public void DroppedTokenIsSplitIntoLongestKeptTokens()
    {
        // Keeps " the" (256) and " them" (257); " themselves" and " theater" are single cl100k tokens that were dropped.
        CompactTokenizer tokenizer = CompactTokenizer.Build([" the the the them them"], vocabularySize: 259);
        CollectionAssert.AreEqual(new[] { ClId(" the"), ClId(" them") }, tokenizer.KeptCl100kIds.ToArray());

        int[] themselves = tokenizer.Encode(" themselves");
        int[] theater = tokenizer.Encode(" theater");

        // The longest kept prefix (" them", not " the"), then bytes where no kept token matches.
        CollectionAssert.AreEqual(new[] { 257, 's', 'e', 'l', 'v', 'e', 's' }, themselves);
        CollectionAssert.AreEqual(new[] { 256, 'a', 't', 'e', 'r' }, theater);
        Assert.AreEqual(" themselves", tokenizer.Decode(themselves));
        Assert.AreEqual(" theater", tokenizer.Decode(theater));
    }

    [TestMethod]
    public void DroppedTokenUsesKeptTokenInsideIt()
    {
        // Keeps only "The"; " Theory" is one dropped cl100k token that contains it after the space.
        CompactTokenizer tokenizer = CompactTokenizer.Build(["The", "The"], vocabularySize: 258);
        CollectionAssert.AreEqual(new[] { ClId("The") }, tokenizer.KeptCl100kIds.ToArray());
        _ = ClId(" Theory");

        int[] ids = tokenizer.Encode(" Theory of The");

        // " Theory" -> ' ' + "The" + bytes; " of" and " The" are dropped too: " The" also contains "The".
        CollectionAssert.AreEqual(new[] { ' ', 256, 'o', 'r', 'y', ' ', 'o', 'f', ' ', 256 }, ids);
        Assert.AreEqual(" Theory of The", tokenizer.Decode(ids));
    }

    [TestMethod]
    public void SplittingIsNeverLongerThanBytesAndRoundTrips()
    {
        foreach (int vocabularySize in new[] { 258, 270, 300, 8192 })
        {
            CompactTokenizer tokenizer = CompactTokenizer.Build(Corpus, vocabularySize);

            int[] ids = tokenizer.Encode(RareText);

            Assert.AreEqual(RareText, tokenizer.Decode(ids), $"vocabulary {vocabularySize}");
            Assert.IsTrue(ids.Length <= Encoding.UTF8.GetByteCount(RareText), $"vocabulary {vocabularySize}");
            Assert.IsTrue(ids.All(id => id >= 0 && id < tokenizer.EndOfTextId), $"vocabulary {vocabularySize}");
        }

        // With the kept tokens of the small corpus, the rare words reuse them (" cat" in " catalog", " the" in " theory").
        Assert.IsTrue(Small.Encode(" catalog theory").Count(id => id >= 256) >= 2);
    }

    [TestMethod]
    public void EncodeIsDeterministicAcrossInstancesAndThreads()
    {
        // Fresh instances, so the threads below race to fill the same empty split cache.
        CompactTokenizer first = CompactTokenizer.Build(Corpus, vocabularySize: 300);
        CompactTokenizer second = CompactTokenizer.Build(Corpus, vocabularySize: 300);
        using var stream = new MemoryStream();
        first.Save(stream);
        stream.Position = 0;
        CompactTokenizer loaded = CompactTokenizer.Load(stream);
        string[] texts = Enumerable.Range(0, 64).Select(i => $"{i} {RareText} {i * 7919}").ToArray();

        int[][][] perThread = new int[8][][];
        using var start = new Barrier(perThread.Length);
        Parallel.For(0, perThread.Length, new ParallelOptions { MaxDegreeOfParallelism = perThread.Length }, t =>
        {
            start.SignalAndWait();
            perThread[t] = texts.Select(second.Encode).ToArray();
        });

        for (int i = 0; i < texts.Length; i++)
        {
            int[] expected = first.Encode(texts[i]);
            CollectionAssert.AreEqual(expected, first.Encode(texts[i]), "same instance, second call");
            CollectionAssert.AreEqual(expected, loaded.Encode(texts[i]), "loaded instance");
            foreach (int[][] results in perThread)
            {
                CollectionAssert.AreEqual(expected, results[i], "concurrent encode");
            }

            Assert.AreEqual(texts[i], first.Decode(expected));
        }
    }

    [TestMethod]
    public void FrequentWordsGetSingleIds()
    {
        int[] the = Small.Encode(" the");
        int[] cat = Small.Encode(" cat");
        int[] sentence = Small.Encode("The cat sat on the mat.");

        Assert.AreEqual(1, the.Length);
        Assert.AreEqual(1, cat.Length);
        Assert.IsTrue(the[0] >= 256, "a kept multi-byte token is not a byte id");
        // The most frequent token in the corpus (" the") gets the first kept id.
        Assert.AreEqual(256, the[0]);
        Assert.IsTrue(sentence.Length <= 7, $"expected about one id per word, got {sentence.Length}");
    }

    [TestMethod]
    public void VocabularyIsBoundedByRequestAndCorpus()
    {
        Assert.IsTrue(Small.VocabularySize <= 300);
        Assert.AreEqual(Small.VocabularySize - 1, Small.EndOfTextId);
        Assert.AreEqual(Small.VocabularySize - 257, Small.KeptCl100kIds.Count);

        CompactTokenizer big = CompactTokenizer.Build(Corpus, vocabularySize: 8192);
        // A tiny corpus has far fewer distinct tokens than requested, so the vocabulary shrinks to fit.
        Assert.IsTrue(big.VocabularySize < 8192);
        Assert.AreEqual(Small.KeptCl100kIds.Count, big.KeptCl100kIds.Count);
    }

    [TestMethod]
    public void BuildIsDeterministic()
    {
        CompactTokenizer again = CompactTokenizer.Build(Corpus, vocabularySize: 300);

        CollectionAssert.AreEqual(Small.KeptCl100kIds.ToArray(), again.KeptCl100kIds.ToArray());
    }

    [TestMethod]
    public void EncodeEmptyAndNull()
    {
        Assert.AreEqual(0, Small.Encode(string.Empty).Length);
        Assert.AreEqual(string.Empty, Small.Decode([]));
        Assert.ThrowsExactly<ArgumentNullException>(() => Small.Encode(null!));
    }

    [TestMethod]
    public void DecodeHandlesEndOfTextAndPartialCharacters()
    {
        int[] a = Small.Encode("first");
        int[] b = Small.Encode("second");
        int[] joined = [.. a, Small.EndOfTextId, .. b];

        Assert.AreEqual("first" + CompactTokenizer.EndOfTextMarker + "second", Small.Decode(joined));

        // The first byte of "é" (0xC3) alone, as a sampler might emit it, becomes U+FFFD instead of throwing.
        Assert.AreEqual("x\uFFFD", Small.Decode([(int)'x', 0xC3]));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Small.Decode([Small.VocabularySize]));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Small.Decode([-1]));
    }

    [TestMethod]
    public void SaveLoadRoundTrip()
    {
        using var stream = new MemoryStream();
        Small.Save(stream);
        stream.Position = 0;

        CompactTokenizer loaded = CompactTokenizer.Load(stream);

        Assert.AreEqual(Small.VocabularySize, loaded.VocabularySize);
        Assert.AreEqual(Small.EndOfTextId, loaded.EndOfTextId);
        CollectionAssert.AreEqual(Small.KeptCl100kIds.ToArray(), loaded.KeptCl100kIds.ToArray());
        const string Text = "The dog sat on the cat's mat. 🙂";
        CollectionAssert.AreEqual(Small.Encode(Text), loaded.Encode(Text));
    }

    [TestMethod]
    public void LoadRejectsWrongMagic()
    {
        byte[] bytes = Saved();
        bytes[0] = (byte)'X';

        var ex = Assert.ThrowsExactly<InvalidDataException>(() => CompactTokenizer.Load(new MemoryStream(bytes)));
        StringAssert.Contains(ex.Message, "magic");
    }

    [TestMethod]
    public void LoadRejectsWrongVersion()
    {
        byte[] bytes = Saved();
        BitConverter.TryWriteBytes(bytes.AsSpan(4, 4), 99);

        var ex = Assert.ThrowsExactly<InvalidDataException>(() => CompactTokenizer.Load(new MemoryStream(bytes)));
        StringAssert.Contains(ex.Message, "version 99");
    }

    [TestMethod]
    public void LoadRejectsTruncatedStream()
    {
        byte[] bytes = Saved();

        foreach (int length in new[] { 0, 2, 6, 10, bytes.Length - 1 })
        {
            var ex = Assert.ThrowsExactly<InvalidDataException>(() => CompactTokenizer.Load(new MemoryStream(bytes, 0, length)),
                $"length {length}");
            StringAssert.Contains(ex.Message, "truncated");
        }
    }

    [TestMethod]
    public void LoadRejectsInvalidIds()
    {
        byte[] bytes = Saved();
        BitConverter.TryWriteBytes(bytes.AsSpan(12, 4), int.MaxValue);

        var ex = Assert.ThrowsExactly<InvalidDataException>(() => CompactTokenizer.Load(new MemoryStream(bytes)));
        StringAssert.Contains(ex.Message, "entry 0");
    }

    [TestMethod]
    [DataRow(0)]
    [DataRow(256)]
    [DataRow(257)]
    [DataRow(-5)]
    public void BuildRejectsTooSmallVocabulary(int size)
    {
        var ex = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => CompactTokenizer.Build(Corpus, size));

        Assert.AreEqual("vocabularySize", ex.ParamName);
        StringAssert.Contains(ex.Message, "258");
    }

    [TestMethod]
    public void BuildRejectsNulls()
    {
        Assert.ThrowsExactly<ArgumentNullException>(() => CompactTokenizer.Build(null!));
        var ex = Assert.ThrowsExactly<ArgumentException>(() => CompactTokenizer.Build(["ok", null!]));
        Assert.AreEqual("trainingTexts", ex.ParamName);
    }

    /// <summary>The cl100k id of <paramref name="text"/>, asserting that cl100k encodes it as a single token.</summary>
    private static int ClId(string text)
    {
        IReadOnlyList<int> ids = Cl100k.Value.EncodeToIds(text);
        Assert.AreEqual(1, ids.Count, $"test premise: cl100k encodes '{text}' as one token");
        return ids[0];
    }

    private static byte[] Saved()
    {
        using var stream = new MemoryStream();
        Small.Save(stream);
        return stream.ToArray();
    }
}
