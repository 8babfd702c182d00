using Microsoft.ML.Data;

namespace Microsoft.ML.Peer.Tests.MLNet;

[TestClass]
public sealed class PeerLanguageModelTests
{
    private static PeerLanguageModelTransformer? _model;
    private static MLContext _ml = new(seed: 1);

    // One model trained for the whole class: training is the slow part and the tests only read it.
    private static PeerLanguageModelTransformer Model
    {
        get
        {
            if (_model is null)
            {
                var train = _ml.Data.LoadFromEnumerable(PluginTestData.Sentences(300, seed: 1));
                _model = _ml.Peer().LanguageModel(PluginTestData.TinyLanguageModel()).Fit(train);
            }
            return _model;
        }
    }

    [ClassCleanup]
    public static void Cleanup() => _model?.Dispose();

    [TestMethod]
    public void TransformAddsPerplexityAndTokenCountBelowVocabularySize()
    {
        var texts = _ml.Data.LoadFromEnumerable(PluginTestData.Sentences(20, seed: 2));
        var scored = Model.Transform(texts);
        Assert.AreEqual(NumberDataViewType.Single, scored.Schema["Perplexity"].Type);
        Assert.AreEqual(NumberDataViewType.Int32, scored.Schema["TokenCount"].Type);
        var perplexity = PluginTestData.Floats(scored, "Perplexity");
        var counts = scored.GetColumn<int>("TokenCount").ToArray();
        Assert.AreEqual(20, perplexity.Length);
        Assert.IsTrue(counts.All(c => c > 3), "every sentence has several tokens");
        // The grammar allows 5 choices per slot: a trained model must do far better than the ~50 distinct tokens.
        Assert.IsTrue(perplexity.Average() < 12, $"mean perplexity {perplexity.Average():F2}");
        // Scrambled word order must be less likely than the grammar's order.
        var scrambled = _ml.Data.LoadFromEnumerable(new[] { new PluginTestData.TextRow { Text = "garden the sees bird. the" } });
        float bad = PluginTestData.Floats(Model.Transform(scrambled), "Perplexity")[0];
        Assert.IsTrue(bad > perplexity.Average() * 2, $"scrambled {bad:F2} vs grammatical {perplexity.Average():F2}");
    }

    [TestMethod]
    public void EmptyAndNullTextsAreScoredNotThrown()
    {
        var rows = new[] { new PluginTestData.TextRow { Text = null }, new PluginTestData.TextRow { Text = "" }, new PluginTestData.TextRow { Text = "the cat sees the river." } };
        var scored = Model.Transform(_ml.Data.LoadFromEnumerable(rows));
        var perplexity = PluginTestData.Floats(scored, "Perplexity");
        var counts = scored.GetColumn<int>("TokenCount").ToArray();
        CollectionAssert.AreEqual(new[] { 0, 0 }, counts.Take(2).ToArray());
        Assert.IsTrue(float.IsNaN(perplexity[0]) && float.IsNaN(perplexity[1]));
        Assert.IsTrue(counts[2] > 0 && float.IsFinite(perplexity[2]));
    }

    [TestMethod]
    public void TextLongerThanTheContextIsScoredWindowByWindow()
    {
        string longText = string.Join(' ', PluginTestData.Sentences(20, seed: 5).Select(r => r.Text));
        var (perplexity, tokens) = Model.Score(longText);
        Assert.IsTrue(tokens > 3 * PluginTestData.TinyLanguageModel().MaxSequenceLength, $"{tokens} tokens");
        // Sentences joined without end-of-text ids were never seen in training, so only a loose bound holds.
        Assert.IsTrue(float.IsFinite(perplexity) && perplexity < 60, $"perplexity {perplexity}");
    }

    [TestMethod]
    public void GenerateIsDeterministicForASeed()
    {
        string a = Model.Generate("the cat", maxNewTokens: 12, temperature: 0.8f, seed: 3);
        string b = Model.Generate("the cat", maxNewTokens: 12, temperature: 0.8f, seed: 3);
        Assert.AreEqual(a, b);
        Assert.IsFalse(string.IsNullOrWhiteSpace(a));
        var others = Enumerable.Range(4, 6).Select(s => Model.Generate("the cat", 12, 1.5f, s)).Distinct().Count();
        Assert.IsTrue(others > 1, "different seeds give different samples at high temperature");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Model.Generate("x", maxNewTokens: -1));
    }

    [TestMethod]
    public void SaveAndLoadGiveBitIdenticalScores()
    {
        var texts = _ml.Data.LoadFromEnumerable(PluginTestData.Sentences(10, seed: 7));
        string path = Path.Combine(Path.GetTempPath(), $"peer-lm-{Guid.NewGuid():N}.zip");
        try
        {
            _ml.Model.Save(Model, texts.Schema, path);
            var loaded = new MLContext().Model.Load(path, out var schema);
            Assert.IsInstanceOfType<PeerLanguageModelTransformer>(loaded);
            CollectionAssert.AreEqual(PluginTestData.Floats(Model.Transform(texts), "Perplexity"), PluginTestData.Floats(loaded.Transform(texts), "Perplexity"));
            Assert.AreEqual(Model.Generate("a dog", 10, 0.8f, 1), ((PeerLanguageModelTransformer)loaded).Generate("a dog", 10, 0.8f, 1));
            ((IDisposable)loaded).Dispose();
        }
        finally
        {
            File.Delete(path);
        }
    }
}
