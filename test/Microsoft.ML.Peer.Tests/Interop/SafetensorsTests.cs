using System.Text.Json.Nodes;
using Microsoft.ML.Data;
using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Tests.MLNet;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Tests.Interop;

[TestClass]
public sealed class SafetensorsTests
{
    public static IEnumerable<object[]> LanguageModelKinds => new[]
    {
        new object[] { "Dense" }, new object[] { "MoE" }, new object[] { "ProductKeyMemory" }, new object[] { "Peer" },
        new object[] { "PeerWhitenedNormalizedInputBN" }, new object[] { "PeerBFloat16" },
    };

    /// <summary>The tiny language model of <paramref name="variant"/>: a feed-forward kind, or PEER with every retrieval option
    /// on.</summary>
    internal static LanguageModelOptions LanguageModelVariant(string variant) => variant switch
    {
        "PeerWhitenedNormalizedInputBN" => SafetensorsFiles.LanguageModel(FeedForwardKind.Peer, p =>
        {
            p.QueryWhitening = true;
            p.NormalizeSubKeys = true;
            p.InputBatchNorm = true;
        }),
        "PeerBFloat16" => SafetensorsFiles.LanguageModel(FeedForwardKind.Peer, p =>
        {
            p.SparseGradients = true;
            p.ExpertTablePrecision = ExpertTablePrecision.BFloat16;
        }),
        "PeerSigmoidRelu" => SafetensorsFiles.LanguageModel(FeedForwardKind.Peer, p =>
        {
            p.ScoreActivation = ScoreActivation.Sigmoid;
            p.ExpertActivation = ExpertActivation.Relu;
        }),
        _ => SafetensorsFiles.LanguageModel(Enum.Parse<FeedForwardKind>(variant)),
    };

    internal static TextClassifierOptions ClassifierVariant(string variant)
    {
        var options = Models.TinyTextClassification.Options(variant.StartsWith("Pkm", StringComparison.Ordinal)
            ? FeedForwardKind.ProductKeyMemory
            : FeedForwardKind.Peer);
        options.Layers = variant.EndsWith("NoBlocks", StringComparison.Ordinal) ? 0 : 1;
        return options;
    }

    [TestMethod]
    [DynamicData(nameof(LanguageModelKinds))]
    public void LanguageModelRoundTripIsBitIdentical(string variant)
    {
        using var model = new TransformerLanguageModel(LanguageModelVariant(variant));
        SafetensorsFiles.Randomize(model, seed: 11);
        model.eval();
        string path = SafetensorsFiles.TemporaryPath("lm");
        try
        {
            PeerSafetensors.Save(model, path);
            using var loaded = PeerSafetensors.LoadLanguageModel(path);
            loaded.eval();
            AssertSameState(model, loaded);
            using var scope = NewDisposeScope();
            var tokens = tensor(SafetensorsFiles.Tokens(4, 16, Training.TinyLanguageModels.Vocabulary, seed: 3));
            using var noGrad = no_grad();
            var expected = model.forward(tokens);
            var actual = loaded.forward(tokens);
            Assert.IsTrue(expected.abs().max().item<float>() > 0.5f, "the logits are not trivially small");
            Assert.IsTrue(Identical(expected, actual), $"max |Δ| = {(expected - actual).abs().max().item<float>()}");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    [DataRow("PeerBlocks")]
    [DataRow("PeerNoBlocks")]
    [DataRow("PkmBlocks")]
    public void TextClassifierRoundTripIsBitIdentical(string variant)
    {
        var options = ClassifierVariant(variant);
        using var model = new TransformerTextClassifier(options);
        SafetensorsFiles.Randomize(model, seed: 12);
        model.eval();
        string path = SafetensorsFiles.TemporaryPath("classifier");
        try
        {
            PeerSafetensors.Save(model, path);
            using var loaded = PeerSafetensors.LoadTextClassifier(path);
            loaded.eval();
            AssertSameState(model, loaded);
            using var scope = NewDisposeScope();
            var tokens = tensor(SafetensorsFiles.Tokens(6, 16, options.VocabularySize, seed: 4, padding: options.PaddingId));
            using var noGrad = no_grad();
            var expected = model.forward(tokens);
            Assert.IsTrue(Identical(expected, loaded.forward(tokens)));
            Assert.AreEqual(options.Layers, loaded.Options.Layers);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>Same shape, type and every value bit for bit (compared as raw bits, so -0 and +0 differ and NaN equals itself).</summary>
    internal static bool Identical(Tensor a, Tensor b) =>
        a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.cpu().contiguous().bytes.SequenceEqual(b.cpu().contiguous().bytes);

    private static void AssertSameState(nn.Module expected, nn.Module actual)
    {
        var a = expected.state_dict();
        var b = actual.state_dict();
        CollectionAssert.AreEqual(a.Keys.ToList(), b.Keys.ToList());
        foreach (var (name, tensor) in a) Assert.IsTrue(Identical(tensor, b[name]), $"tensor '{name}' changed");
    }

    [TestMethod]
    public void ExportedNamesAreTheStateDictionaryNames()
    {
        using var model = new TransformerLanguageModel(LanguageModelVariant("Peer"));
        string path = SafetensorsFiles.TemporaryPath("names");
        try
        {
            PeerSafetensors.Save(model, path);
            var (header, _) = SafetensorsFiles.Split(path);
            var names = header.Select(p => p.Key).Where(k => k != "__metadata__").ToList();
            CollectionAssert.AreEquivalent(model.state_dict().Keys.ToList(), names);
            CollectionAssert.Contains(names, "blocks.1.feed_forward.expert_down.weight");
            CollectionAssert.Contains(names, "blocks.1.feed_forward.router.retriever.sub_keys");
            CollectionAssert.Contains(names, "blocks.1.feed_forward.router.query_norm.running_var");
            Assert.AreEqual("I64", (string)header["blocks.1.feed_forward.router.query_norm.num_batches_tracked"]!["dtype"]!);
            var metadata = header["__metadata__"]!;
            Assert.AreEqual("language_model", (string)metadata["peer.model"]!);
            Assert.AreEqual("pt", (string)metadata["format"]!);
            var config = SafetensorsFiles.Config(header);
            Assert.AreEqual("Peer", (string)config["FeedForward"]!, "enums are written by name");
            Assert.AreEqual(64, (int)config["Peer"]!["Experts"]!);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>
    /// The ML.NET path: a trained language model exported, imported with its tokenizer, scores bit for bit as the trained
    /// one; so does its import saved in an ML.NET zip and loaded back.
    /// </summary>
    [TestMethod]
    public void TrainedLanguageModelImportsIntoMLNetWithTheSameScores()
    {
        var ml = new MLContext(seed: 1);
        var options = PluginTestData.TinyLanguageModel();
        options.Epochs = 2;
        using var trained = ml.Peer().LanguageModel(options).Fit(ml.Data.LoadFromEnumerable(PluginTestData.Sentences(120, seed: 1)));
        string path = SafetensorsFiles.TemporaryPath("plugin-lm"), zip = ModelFiles.TemporaryPath("plugin-lm");
        try
        {
            trained.ExportSafetensors(path);
            using var imported = ml.Peer().LanguageModelFromSafetensors(path, trained.Tokenizer);
            var texts = ml.Data.LoadFromEnumerable(PluginTestData.Sentences(12, seed: 5));
            var expected = PluginTestData.Floats(trained.Transform(texts), "Perplexity");
            CollectionAssert.AreEqual(expected, PluginTestData.Floats(imported.Transform(texts), "Perplexity"));
            ml.Model.Save(imported, texts.Schema, zip);
            var reloaded = ml.Model.Load(zip, out _);
            CollectionAssert.AreEqual(expected, PluginTestData.Floats(reloaded.Transform(texts), "Perplexity"));
            (reloaded as IDisposable)?.Dispose();
        }
        finally
        {
            File.Delete(path);
            File.Delete(zip);
        }
    }

    /// <summary>The classifier's import keeps the class names and truncation the export recorded, and scores bit for bit.</summary>
    [TestMethod]
    public void TrainedTextClassifierImportsIntoMLNetWithClassNames()
    {
        var ml = new MLContext(seed: 1);
        var options = PluginTestData.TinyClassifier();
        options.Epochs = 1;
        options.Truncation = TextTruncation.KeepStart;
        var data = ml.Data.LoadFromEnumerable(PluginTestData.Topics(80, seed: 1));
        var pipeline = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.Peer().TextClassification(options));
        var trained = pipeline.Fit(data);
        var classifier = trained.LastTransformer;
        string path = SafetensorsFiles.TemporaryPath("plugin-tc");
        try
        {
            classifier.ExportSafetensors(path);
            using var imported = ml.Peer().TextClassifierFromSafetensors(path, classifier.Tokenizer);
            CollectionAssert.AreEqual(classifier.ClassNames!.ToList(), imported.ClassNames!.ToList());
            Assert.AreEqual(TextTruncation.KeepStart, imported.Truncation);
            var texts = ml.Data.LoadFromEnumerable(PluginTestData.Topics(10, seed: 9));
            var expected = classifier.Transform(texts).GetColumn<float[]>("Score").ToList();
            var actual = imported.Transform(texts).GetColumn<float[]>("Score").ToList();
            for (int i = 0; i < expected.Count; i++) CollectionAssert.AreEqual(expected[i], actual[i]);
            using var renamed = ml.Peer().TextClassifierFromSafetensors(path, classifier.Tokenizer, classNames: new[] { "a", "b" });
            CollectionAssert.AreEqual(new[] { "a", "b" }, renamed.ClassNames!.ToList());
            var wrongCount = Assert.ThrowsExactly<ArgumentException>(() => ml.Peer().TextClassifierFromSafetensors(path,
                classifier.Tokenizer, classNames: new[] { "a" }));
            StringAssert.Contains(wrongCount.Message, "1 class names");
        }
        finally
        {
            File.Delete(path);
            classifier.Dispose();
        }
    }

    [TestMethod]
    public void ImportRefusesAMismatchedTokenizerOrKind()
    {
        var ml = new MLContext(seed: 1);
        using var model = new TransformerLanguageModel(LanguageModelVariant("Dense"));
        string path = SafetensorsFiles.TemporaryPath("tokenizer");
        try
        {
            PeerSafetensors.Save(model, path);
            var tokenizer =
                Microsoft.ML.Peer.Data.CompactTokenizer.Build(new[] { "some words to build a small vocabulary" }, vocabularySize: 300);
            var e = Assert.ThrowsExactly<ArgumentException>(() => ml.Peer().LanguageModelFromSafetensors(path, tokenizer));
            StringAssert.Contains(e.Message, "VocabularySize = 24");
            var kind = Assert.ThrowsExactly<InvalidDataException>(() => PeerSafetensors.LoadTextClassifier(path));
            StringAssert.Contains(kind.Message, "holds a 'language_model' model, not a 'text_classifier'");
        }
        finally
        {
            File.Delete(path);
        }
    }

    public static IEnumerable<object[]> HostileEdits => new (string Name, string Expected)[]
    {
        ("header length past the end", "runs past the end of the file"),
        ("header length 2^63", "exceeds the 100,000,000 bytes"),
        ("header not JSON", "is not valid JSON"),
        ("header an array", "is not a JSON object"),
        ("unknown dtype", "has dtype 'F8', which this reader does not know"),
        ("negative dimension", "dimension 0 of tensor 'final_norm.weight' is not a non-negative integer"),
        ("huge shape", "holds more bytes than the file's"),
        ("offsets past the data", "outside the"),
        ("offsets overlap", "overlaps the tensor before it"),
        ("shape and offsets disagree", "needs 128 bytes but its data_offsets span 132"),
        ("cut short", "outside the"),
        ("a byte appended", "bytes no tensor owns"),
        ("no metadata", "has no 'peer.model' and 'peer.config' metadata"),
        ("newer format", "has export format version '2'"),
        ("config not JSON", "invalid 'peer.config' metadata"),
        ("config invalid", "invalid Experts"),
        ("config describes a bigger model", "describes has"),
        ("tensor renamed", "has no tensor 'final_norm.bias'"),
        ("tensor transposed", "holds tensor 'blocks.0.attention.qkv.weight' as F32 [32, 96]"),
        ("tensor as int32", "holds tensor 'final_norm.weight' as I32 [32]"),
        ("NaN weight", "NaN or infinite values in tensor 'final_norm.weight'"),
        ("metadata value not a string", "field 'peer.model' is not a string"),
        ("metadata key twice", "its '__metadata__' names 'peer.model' twice"),
    }.Select(c => new object[] { c.Name, c.Expected });

    /// <summary>Each damaged or hostile file is refused with an InvalidDataException that says what is wrong, before anything big is
    /// allocated.</summary>
    [TestMethod]
    [DynamicData(nameof(HostileEdits))]
    public void HostileFilesFailWithClearErrors(string edit, string expected)
    {
        using var model = new TransformerLanguageModel(LanguageModelVariant("Peer"));
        string source = SafetensorsFiles.TemporaryPath("source");
        string? path = null;
        try
        {
            PeerSafetensors.Save(model, source);
            path = Hostile(source, edit);
            var e = Assert.ThrowsExactly<InvalidDataException>(() => PeerSafetensors.LoadLanguageModel(path).Dispose(), edit);
            StringAssert.Contains(e.Message, expected, $"{edit}: {e.Message}");
            StringAssert.Contains(e.Message, path, "the message names the file");
        }
        finally
        {
            File.Delete(source);
            if (path is not null) File.Delete(path);
        }
    }

    /// <summary>
    /// Random damage (a flipped byte in the length, the header or the data; a cut at a random point): each file either
    /// loads into a model with finite weights, or is refused with an InvalidDataException naming the file; nothing else.
    /// </summary>
    [TestMethod]
    public void RandomlyDamagedFilesLoadOrFailCleanly()
    {
        using var model = new TransformerLanguageModel(LanguageModelVariant("Peer"));
        string source = SafetensorsFiles.TemporaryPath("fuzz-source"), path = SafetensorsFiles.TemporaryPath("fuzz");
        try
        {
            PeerSafetensors.Save(model, source);
            var original = File.ReadAllBytes(source);
            int headerEnd = 8 + (int)BitConverter.ToInt64(original, 0);
            var random = new Random(2026);
            int refused = 0, loaded = 0;
            for (int i = 0; i < 300; i++)
            {
                var bytes = (byte[])original.Clone();
                int kind = i % 4;
                if (kind == 3) bytes = bytes[..random.Next(bytes.Length)];
                else
                {
                    int at = kind switch { 0 => random.Next(8), 1 => random.Next(8, headerEnd), _ => random.Next(headerEnd, bytes.Length) };
                    bytes[at] ^= (byte)(1 << random.Next(8));
                }
                File.WriteAllBytes(path, bytes);
                try
                {
                    using var damaged = PeerSafetensors.LoadLanguageModel(path);
                    Assert.IsNull(Microsoft.ML.Peer.Training.FiniteWeights.FirstNonFinite(damaged),
                        $"case {i}: a loaded model holds NaN or infinity");
                    loaded++;
                }
                catch (InvalidDataException e)
                {
                    StringAssert.Contains(e.Message, path, $"case {i}");
                    refused++;
                }
            }
            // A flipped length or cut always breaks the file; most data flips change a weight and load.
            Assert.IsTrue(refused >= 150 && loaded >= 20, $"{refused} refused, {loaded} loaded");
        }
        finally
        {
            File.Delete(source);
            File.Delete(path);
        }
    }

    private static string Hostile(string source, string edit)
    {
        static JsonObject Entry(JsonObject header, string name) => header[name]!.AsObject();
        static void Offsets(JsonObject header, string name, long begin, long end)
            => Entry(header, name)["data_offsets"] = new JsonArray(begin, end);
        static long Begin(JsonObject header, string name) => (long)Entry(header, name)["data_offsets"]![0]!;
        static long End(JsonObject header, string name) => (long)Entry(header, name)["data_offsets"]![1]!;
        switch (edit)
        {
            case "header length past the end":
            case "header length 2^63":
            case "header not JSON":
            case "header an array":
            {
                var bytes = File.ReadAllBytes(source);
                string path = SafetensorsFiles.TemporaryPath("raw");
                if (edit == "header length past the end") BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), (ulong)bytes.Length);
                else if (edit == "header length 2^63") BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), 1UL << 63);
                else if (edit == "header not JSON") bytes[8] = (byte)'x';
                else
                {
                    // A header that is a JSON array, padded to its length with spaces.
                    long length = BitConverter.ToInt64(bytes, 0);
                    for (long i = 8; i < 8 + length; i++) bytes[i] = (byte)' ';
                    bytes[8] = (byte)'[';
                    bytes[9] = (byte)']';
                }
                File.WriteAllBytes(path, bytes);
                return path;
            }
            case "unknown dtype": return SafetensorsFiles.Edited(source, h => Entry(h, "final_norm.weight")["dtype"] = "F8");
            case "negative dimension":
                return SafetensorsFiles.Edited(source, h => Entry(h, "final_norm.weight")["shape"] = new JsonArray(-32));
            case "huge shape":
                return SafetensorsFiles.Edited(source, h => Entry(h, "final_norm.weight")["shape"] = new JsonArray(1L << 40, 1L << 40));
            case "offsets past the data":
                return SafetensorsFiles.Edited(source, h => Offsets(h, "final_norm.weight", Begin(h, "final_norm.weight"), 1L << 50));
            case "offsets overlap":
                return SafetensorsFiles.Edited(source,
                    h => Offsets(h, "final_norm.bias", Begin(h, "final_norm.weight"), End(h, "final_norm.weight")));
            case "shape and offsets disagree":
                return SafetensorsFiles.Edited(source,
                    h => Offsets(h, "final_norm.weight", Begin(h, "final_norm.weight"), End(h, "final_norm.weight") + 4));
            case "cut short": return SafetensorsFiles.Edited(source, _ => { }, d => d[..^4]);
            case "a byte appended": return SafetensorsFiles.Edited(source, _ => { }, d => d.Append((byte)0).ToArray());
            case "no metadata": return SafetensorsFiles.Edited(source, h => h.Remove("__metadata__"));
            case "newer format": return SafetensorsFiles.Edited(source, h => h["__metadata__"]!["peer.format_version"] = "2");
            case "config not JSON":
                return SafetensorsFiles.Edited(source, h => h["__metadata__"]!["peer.config"] = "{\"VocabularySize\": ");
            case "config invalid":
                return SafetensorsFiles.Edited(source, h =>
                {
                    var config = SafetensorsFiles.Config(h);
                    config["Peer"]!["Experts"] = 63;
                    SafetensorsFiles.SetConfig(h, config);
                });
            case "config describes a bigger model":
                return SafetensorsFiles.Edited(source, h =>
                {
                    var config = SafetensorsFiles.Config(h);
                    config["Peer"]!["Experts"] = 8192 * 8192;
                    SafetensorsFiles.SetConfig(h, config);
                });
            case "tensor renamed":
                return SafetensorsFiles.Edited(source, h =>
                {
                    var entry = Entry(h, "final_norm.bias");
                    h.Remove("final_norm.bias");
                    h["final_norm.bias_renamed"] = entry;
                });
            case "tensor transposed":
                return SafetensorsFiles.Edited(source, h => Entry(h, "blocks.0.attention.qkv.weight")["shape"] = new JsonArray(32, 96));
            case "tensor as int32":
                // Same bytes and count, another element type: the model refuses the type.
                return SafetensorsFiles.Edited(source, h => Entry(h, "final_norm.weight")["dtype"] = "I32");
            case "NaN weight":
            {
                long at = 0;
                var edited = SafetensorsFiles.Edited(source, h => at = Begin(h, "final_norm.weight"), d =>
                {
                    BitConverter.TryWriteBytes(d.AsSpan((int)at, 4), float.NaN);
                    return d;
                });
                return edited;
            }
            case "metadata key twice":
            {
                // System.Text.Json keeps one of two equal names, so the duplicate is written into the header's text.
                var (json, data) = SafetensorsFiles.Split(source);
                string text = json.ToJsonString()
                    .Replace("\"peer.model\":\"language_model\"", "\"peer.model\":\"text_classifier\",\"peer.model\":\"language_model\"");
                var header = System.Text.Encoding.UTF8.GetBytes(text);
                var bytes = new byte[8 + header.Length + data.Length];
                BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), (ulong)header.Length);
                header.CopyTo(bytes, 8);
                data.CopyTo(bytes, 8 + header.Length);
                string path = SafetensorsFiles.TemporaryPath("raw");
                File.WriteAllBytes(path, bytes);
                return path;
            }
            case "metadata value not a string": return SafetensorsFiles.Edited(source, h => h["__metadata__"]!["peer.model"] = 3);
            default: throw new ArgumentOutOfRangeException(nameof(edit), edit, "unknown edit");
        }
    }
}
