using System.Reflection;
using System.Text.Json.Nodes;
using Microsoft.ML.Data;

namespace Microsoft.ML.Peer.Tests.MLNet;

/// <summary>
/// Loading checks before it allocates (issue 10, F1), verifies every stream's checksum (F6) and reports every damaged
/// file as an InvalidDataException naming the stream and the field (F7); models of the previous format still load.
/// </summary>
[TestClass]
public sealed class SavedModelSafetyTests
{
    private static readonly MLContext Ml = new(seed: 1);
    private static byte[]? _saved;

    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "MLNet", "Fixtures", name);

    /// <summary>A small trained pipeline (MapValueToKey → PEER classifier → MapKeyToValue), saved once for the class.</summary>
    private static byte[] Saved
    {
        get
        {
            if (_saved is null)
            {
                var train = Ml.Data.LoadFromEnumerable(PluginTestData.Topics(64, seed: 3, classes: 3));
                var options = PluginTestData.TinyClassifier();
                options.Epochs = 2;
                var model = Ml.Transforms.Conversion.MapValueToKey("Label").Append(Ml.Peer().TextClassification(options))
                    .Append(Ml.Transforms.Conversion.MapKeyToValue("PredictedLabel")).Fit(train);
                var m = new MemoryStream();
                Ml.Model.Save(model, train.Schema, m);
                _saved = m.ToArray();
            }
            return _saved;
        }
    }

    /// <summary>
    /// The InvalidDataException a damaged model fails with. ML.NET creates loadable classes by reflection and wraps their
    /// exceptions in TargetInvocationException, once per level: twice for a transformer inside a chain.
    /// </summary>
    internal static InvalidDataException LoadFails(byte[] zip)
    {
        var e = Assert.ThrowsExactly<TargetInvocationException>(() => new MLContext().Model.Load(new MemoryStream(zip), out _));
        Exception inner = e;
        while (inner is TargetInvocationException { InnerException: { } next }) inner = next;
        Assert.IsInstanceOfType<InvalidDataException>(inner, e.ToString());
        return (InvalidDataException)inner;
    }

    private static byte[] WithOptions(Action<JsonObject> edit, bool reseal)
    {
        var zip = ModelZip.Read(Saved);
        var options = zip.Options;
        edit(options);
        zip.Options = options;
        if (reseal) zip.ResealChecksums();
        return zip.ToBytes();
    }

    [TestMethod]
    public void ModelsOfThePreviousFormatLoadAndScoreAsTheyDid()
    {
        var lm = AssertLoadsAndScoresAsSaved("classifier-format-00010001.zip", "classifier-scores.txt",
            "language-model-format-00010001.zip", "lm-scores.txt");

        // Saved again, the same model is written in the current format, with its checksums.
        var m = new MemoryStream();
        Ml.Model.Save(lm, null, m);
        var zip = ModelZip.Read(m.ToArray());
        var checksums = JsonNode.Parse(zip.ReadString("PeerChecksums.json"))!;
        StringAssert.StartsWith(checksums["Writer"]!.GetValue<string>(), "0.");
        CollectionAssert.AreEquivalent(new[] { "PeerOptions.json", "PeerTokenizer.bin", "PeerWeights.bin" },
            checksums["Streams"]!.AsObject().Select(p => p.Key).ToArray());
    }

    /// <summary>
    /// Models saved by main at 8f6f7c0, before options, training loops and models were restructured (format 0x00010002,
    /// whitened queries and unit-length sub-keys on), load and score as they did when saved.
    /// </summary>
    [TestMethod]
    public void ModelsSavedBeforeTheRestructuringLoadAndScoreAsTheyDid()
    {
        using var lm = AssertLoadsAndScoresAsSaved("classifier-format-main-8f6f7c0.zip", "classifier-main-scores.txt",
            "language-model-format-main-8f6f7c0.zip", "lm-main-scores.txt") as IDisposable;
    }

    /// <summary>Loads both fixture models, scores the fixture texts and compares with the saved scores; returns the language
    /// model.</summary>
    private static ITransformer AssertLoadsAndScoresAsSaved(string classifierZip, string classifierScores, string languageModelZip,
        string languageModelScores)
    {
        var classifier = Ml.Model.Load(Fixture(classifierZip), out _);
        var texts = File.ReadAllLines(Fixture("classifier-texts.txt")).Select(t => new PluginTestData.LabeledText { Text = t });
        var scores = classifier.Transform(Ml.Data.LoadFromEnumerable(texts)).GetColumn<float[]>("Score").SelectMany(s => s).ToArray();
        AssertSameScores(File.ReadAllLines(Fixture(classifierScores)).SelectMany(line => line.Split(' ')), scores,
            $"{classifierZip} Score");
        (classifier as IDisposable)?.Dispose();

        var lm = Ml.Model.Load(Fixture(languageModelZip), out _);
        var sentences = File.ReadAllLines(Fixture("lm-texts.txt")).Select(t => new PluginTestData.TextRow { Text = t });
        var perplexity = lm.Transform(Ml.Data.LoadFromEnumerable(sentences)).GetColumn<float>("Perplexity").ToArray();
        AssertSameScores(File.ReadAllLines(Fixture(languageModelScores)), perplexity, $"{languageModelZip} Perplexity");
        return lm;
    }

    /// <summary>
    /// The fixtures' scores (hex bits of each float) against today's. libtorch picks its CPU kernels at run time (AVX-512 on
    /// the Xeon that saved the fixtures, AVX2 on an EPYC without it), and their sums round differently in the last bits; a
    /// save and load on one machine is bit for bit (SaveAndLoadGiveBitIdenticalScores), across machines 1e-5 relative holds.
    /// </summary>
    private static void AssertSameScores(IEnumerable<string> savedBits, float[] scores, string what)
    {
        var saved = savedBits.Select(h => BitConverter.Int32BitsToSingle(Convert.ToInt32(h, 16))).ToArray();
        Assert.AreEqual(saved.Length, scores.Length, $"{what}: number of values");
        for (int i = 0; i < saved.Length; i++)
            Assert.IsTrue(Math.Abs(saved[i] - scores[i]) <= 1e-5 * Math.Max(Math.Abs(saved[i]), 1e-6f),
                $"{what}[{i}]: saved {saved[i]:R}, scored {scores[i]:R}");
    }

    [TestMethod]
    public void F1_OptionsDescribingAHugeModelAreRefusedBeforeAnythingIsBuilt()
    {
        // Before: Experts = 4096² built and initialised 17 GB before the weights were read; Layers = 100,000 ran for minutes.
        long before = PeakResidentMemory.ResetAndRead();
        foreach (var (field, value, expected) in new (string, int, string)[]
        {
            ("Layers", 100_000, "Layers must be at most 256"),
            ("ModelDimension", 1 << 20, "ModelDimension must be at most"),
            ("VocabularySize", 1 << 24, "VocabularySize must be at most"),
            ("ContextLength", 1 << 30, "ContextLength must be at most"),
            ("Layers", 2, "values but the model 'PeerOptions.json' describes has"),
            ("ModelDimension", 1 << 12, "values but the model 'PeerOptions.json' describes has"),
        })
        {
            var e = LoadFails(WithOptions(o => o[field] = value, reseal: true));
            StringAssert.Contains(e.Message, expected, $"{field} = {value}: {e.Message}");
        }
        var experts = LoadFails(WithOptions(o => o["ProductKeyMemory"]!["Experts"] = 4096 * 4096, reseal: true));
        StringAssert.Contains(experts.Message, "'PeerWeights.bin' stream holds", experts.Message);
        var notSquare = LoadFails(WithOptions(o => o["ProductKeyMemory"]!["Experts"] = 1000, reseal: true));
        StringAssert.Contains(notSquare.Message, "invalid Experts", notSquare.Message);
        long grown = PeakResidentMemory.Peak() - before;
        Assert.IsTrue(grown < 256L << 20, $"refusing the edited files raised the peak RSS by {grown >> 20} MB");
    }

    [TestMethod]
    public void F6_AChangedByteInAnyStreamIsAnErrorNamingTheStream()
    {
        var zip = ModelZip.Read(Saved);
        // A byte in the middle of the weights' data: it used to load and score differently.
        var weights = zip.Clone();
        var bytes = weights["PeerWeights.bin"];
        bytes[bytes.Length / 2] ^= 0x10;
        var e = LoadFails(weights.ToBytes());
        StringAssert.Contains(e.Message, "'PeerWeights.bin'");
        StringAssert.Contains(e.Message, "checksum");

        // Two kept tokenizer ids swapped: a different tokenizer of the same size.
        var tokenizer = zip.Clone();
        var t = tokenizer["PeerTokenizer.bin"];
        var first = t.AsSpan(12, 4).ToArray();
        t.AsSpan(16, 4).CopyTo(t.AsSpan(12, 4));
        first.CopyTo(t.AsSpan(16, 4));
        StringAssert.Contains(LoadFails(tokenizer.ToBytes()).Message, "'PeerTokenizer.bin'");

        // A changed PaddingId, still a valid id.
        var padding = LoadFails(WithOptions(o => o["PaddingId"] = 5, reseal: false));
        StringAssert.Contains(padding.Message, "'PeerOptions.json'");

        // Two tensors of the same shape with their names swapped.
        var names = zip.Clone();
        var w = names["PeerWeights.bin"];
        int a = w.AsSpan().IndexOf("head.weight"u8), b = w.AsSpan().IndexOf("head.bias\u0006"u8);
        Assert.IsTrue(a > 0 && b > 0);
        w[a + "head.".Length] = (byte)'X';
        var swapped = LoadFails(names.ToBytes());
        StringAssert.Contains(swapped.Message, "'PeerWeights.bin'");

        // The class names in the transformer's header, swapped.
        var header = zip.Clone();
        var h = header.PeerHeader;
        int animals = h.AsSpan().IndexOf("animals"u8);
        Assert.IsTrue(animals > 0, "the class names are in the PEER transformer's header");
        h[animals] = (byte)'b';
        StringAssert.Contains(LoadFails(header.ToBytes()).Message, "header");
    }

    [TestMethod]
    public void F7_EveryDamagedFieldIsAnInvalidDataExceptionNamingIt()
    {
        // Before: NullReferenceException.
        StringAssert.Contains(LoadFails(WithOptions(o => o["Peer"] = null, reseal: true)).Message, "Peer");
        // Before: a libtorch ExternalException from the shape mismatch inside Module.load.
        var zip = ModelZip.Read(Saved);
        var w = zip["PeerWeights.bin"];
        int at = w.AsSpan().IndexOf("head.bias"u8) + "head.bias".Length;
        w[at] = 3;                                               // float32 → int32, the same size
        zip.ResealChecksums();
        var type = LoadFails(zip.ToBytes());
        StringAssert.Contains(type.Message, "'head.bias'");
        StringAssert.Contains(type.Message, "Int32");
        // A JSON number too large for its field: before, an OverflowException or a JsonException with no stream named.
        var overflow = LoadFails(WithOptions(o => o["Layers"] = 1e12, reseal: true));
        StringAssert.Contains(overflow.Message, "'PeerOptions.json'");
        // The checksums themselves removed from a file that says it has them.
        var missing = ModelZip.Read(Saved);
        missing.Remove("PeerChecksums.json");
        StringAssert.Contains(LoadFails(missing.ToBytes()).Message, "'PeerChecksums.json'");
        // NaN weights written into a file whose checksums agree: refused, not scored.
        var nan = ModelZip.Read(Saved);
        var data = nan["PeerWeights.bin"];
        int bias = data.AsSpan().IndexOf("head.bias"u8) + "head.bias".Length + 3;   // type, rank, dimension
        BitConverter.TryWriteBytes(data.AsSpan(bias, 4), float.NaN);
        nan.ResealChecksums();
        StringAssert.Contains(LoadFails(nan.ToBytes()).Message, "NaN");
    }
}
