using Microsoft.ML.Data;
using Microsoft.ML.Peer.Layers;
using static TorchSharp.torch;

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
    public void EvaluateGivesStreamPerplexityAndExpertUsage()
    {
        var heldOut = _ml.Data.LoadFromEnumerable(PluginTestData.Sentences(40, seed: 11));
        var metrics = Model.Evaluate(heldOut);
        Assert.IsTrue(metrics.Tokens > 200, $"{metrics.Tokens} tokens");
        Assert.AreEqual(Math.Exp(metrics.CrossEntropy), metrics.Perplexity, 1e-9 * metrics.Perplexity);
        Assert.IsTrue(metrics.Perplexity < 12, $"perplexity {metrics.Perplexity:F2}");
        // The tiny model has 2 blocks: PEER replaces the FFN of block 1, the middle one.
        var usage = metrics.ExpertUsage.Single();
        Assert.AreEqual(1, usage.Key);
        Assert.AreEqual(16 * 16, usage.Value.Experts);
        Assert.IsTrue(usage.Value.UsedFraction is > 0 and <= 1, $"used {usage.Value.UsedFraction}");
    }

    [TestMethod]
    public void EvaluateWithBatchStatisticsLeavesTheModelAsItWas()
    {
        var heldOut = _ml.Data.LoadFromEnumerable(PluginTestData.Sentences(40, seed: 11));
        var running = Model.Evaluate(heldOut);
        var batch = Model.Evaluate(heldOut, QueryNormStatistics.Batch);
        Assert.AreEqual(running.Tokens, batch.Tokens);
        Assert.AreNotEqual(running.CrossEntropy, batch.CrossEntropy, "batch statistics normalise the queries differently");
        Assert.IsTrue(batch.ExpertUsage.Single().Value.UsedFraction is > 0 and <= 1);
        Assert.AreEqual(running.CrossEntropy, Model.Evaluate(heldOut).CrossEntropy, 1e-12, "the running statistics were changed");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Model.Evaluate(heldOut, (QueryNormStatistics)7));
    }

    [TestMethod]
    public void ReestimatingQueryNormStatisticsIsAnOptionOfTheTrainer()
    {
        var options = PluginTestData.TinyLanguageModel();
        options.ReestimateQueryNormBatches = -1;
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Peer().LanguageModel(options));
        options = PluginTestData.TinyLanguageModel();
        options.Epochs = 2;
        options.ReestimateQueryNormBatches = 4;
        var train = _ml.Data.LoadFromEnumerable(PluginTestData.Sentences(300, seed: 1));
        using var reestimated = _ml.Peer().LanguageModel(options).Fit(train);
        options.ReestimateQueryNormBatches = 0;
        using var plain = _ml.Peer().LanguageModel(options).Fit(train);
        var heldOut = _ml.Data.LoadFromEnumerable(PluginTestData.Sentences(40, seed: 11));
        // Same seed, same steps: only the query norms' running statistics differ, so only the scores do.
        Assert.AreNotEqual(plain.Evaluate(heldOut).CrossEntropy, reestimated.Evaluate(heldOut).CrossEntropy);
    }

    [TestMethod]
    public void EmptyAndNullTextsAreScoredNotThrown()
    {
        var rows = new[] { new PluginTestData.TextRow { Text = null }, new PluginTestData.TextRow { Text = "" },
            new PluginTestData.TextRow { Text = "the cat sees the river." } };
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
    public void WhitenedQueriesAndUnitSubKeysTrainSaveAndLoadThroughMLNet()
    {
        var options = PluginTestData.TinyLanguageModel();
        options.QueryWhitening = true;
        options.NormalizeSubKeys = true;
        var train = _ml.Data.LoadFromEnumerable(PluginTestData.Sentences(200, seed: 1));
        var texts = _ml.Data.LoadFromEnumerable(PluginTestData.Sentences(10, seed: 7));
        using var model = _ml.Peer().LanguageModel(options).Fit(train);
        string path = Path.Combine(Path.GetTempPath(), $"peer-lm-white-{Guid.NewGuid():N}.zip");
        try
        {
            _ml.Model.Save(model, texts.Schema, path);
            var loaded = new MLContext().Model.Load(path, out _);
            var scores = PluginTestData.Floats(model.Transform(texts), "Perplexity");
            Assert.IsTrue(scores.All(float.IsFinite), "finite perplexities");
            CollectionAssert.AreEqual(scores, PluginTestData.Floats(loaded.Transform(texts), "Perplexity"),
                "the running covariance is saved with the model");
            ((IDisposable)loaded).Dispose();
        }
        finally
        {
            File.Delete(path);
        }
        options.QueryBatchNorm = false;
        var error = Assert.ThrowsExactly<ArgumentException>(() => _ml.Peer().LanguageModel(options).Fit(train));
        StringAssert.Contains(error.Message, nameof(options.QueryWhitening));
    }

    [TestMethod]
    public void BFloat16ExpertTablesTrainSaveAndLoadThroughMLNet()
    {
        var options = PluginTestData.TinyLanguageModel();
        options.ExpertTablePrecision = ExpertTablePrecision.BFloat16;
        var train = _ml.Data.LoadFromEnumerable(PluginTestData.Sentences(200, seed: 1));
        var texts = _ml.Data.LoadFromEnumerable(PluginTestData.Sentences(10, seed: 7));
        using var model = _ml.Peer().LanguageModel(options).Fit(train);
        var tables = model.Model.named_parameters().Where(p => p.name.Contains("expert_")).ToList();
        Assert.IsTrue(tables.Count > 0 && tables.All(p => p.parameter.dtype == ScalarType.BFloat16), "the expert tables are bf16");
        string path = Path.Combine(Path.GetTempPath(), $"peer-lm-bf16-{Guid.NewGuid():N}.zip");
        try
        {
            _ml.Model.Save(model, texts.Schema, path);
            var loaded = (PeerLanguageModelTransformer)new MLContext().Model.Load(path, out _);
            var scores = PluginTestData.Floats(model.Transform(texts), "Perplexity");
            Assert.IsTrue(scores.All(float.IsFinite), "finite perplexities");
            CollectionAssert.AreEqual(scores, PluginTestData.Floats(loaded.Transform(texts), "Perplexity"));
            Assert.IsTrue(loaded.Model.named_parameters().Where(p => p.name.Contains("expert_"))
                .All(p => p.parameter.dtype == ScalarType.BFloat16), "the loaded tables are bf16 too");
            loaded.Dispose();
        }
        finally
        {
            File.Delete(path);
        }
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
            CollectionAssert.AreEqual(PluginTestData.Floats(Model.Transform(texts), "Perplexity"),
                PluginTestData.Floats(loaded.Transform(texts), "Perplexity"));
            Assert.AreEqual(Model.Generate("a dog", 10, 0.8f, 1), ((PeerLanguageModelTransformer)loaded).Generate("a dog", 10, 0.8f, 1));
            ((IDisposable)loaded).Dispose();
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void SavedModelScoresIdenticallyInANewProcess()
    {
        var texts = PluginTestData.Sentences(6, seed: 8).Select(r => r.Text).Append(null).Append("").ToArray();
        string path = ModelFiles.TemporaryPath("lm");
        try
        {
            _ml.Model.Save(Model, _ml.Data.LoadFromEnumerable(PluginTestData.Sentences(1, 1)).Schema, path);
            var here = ModelFiles.ScoreHere(Model, _ml, texts);
            var there = ModelFiles.ScoreInNewProcess(path, texts);
            Assert.AreEqual(texts.Length, here.Length);
            CollectionAssert.AreEqual(here, there);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void ANewerFormatVersionFailsWithAMessageNamingTheVersion()
    {
        string path = ModelFiles.TemporaryPath("lm-version");
        try
        {
            _ml.Model.Save(Model, null, path);
            ModelFiles.SetFormatVersion(path, "PEERLMXF", written: 0x00020001, readable: 0x00020001);
            // ML.NET creates loadable classes through reflection, so its Load wraps every loader's exception.
            var wrapped = Assert.ThrowsExactly<System.Reflection.TargetInvocationException>(() => new MLContext().Model.Load(path, out _));
            var e = wrapped.InnerException as InvalidDataException;
            Assert.IsNotNull(e, wrapped.ToString());
            StringAssert.Contains(e.Message, "0x00020001");
            StringAssert.Contains(e.Message, "0x00010001");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void WrongTextColumnIsNamedAtFitAndTransform()
    {
        var numbers = _ml.Data.LoadFromEnumerable(new[] { new { Text = 1.5f } }.Select(r => new NumberRow { Text = r.Text }));
        var estimator = _ml.Peer().LanguageModel(PluginTestData.TinyLanguageModel());
        var fit = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => estimator.Fit(numbers));
        StringAssert.Contains(fit.Message, "text column 'Text'");
        StringAssert.Contains(fit.Message, "expected String, got Single");
        var missing = Assert.ThrowsExactly<ArgumentOutOfRangeException>(
            () => estimator.GetOutputSchema(PluginTestData.Shape(_ml.Data.LoadFromEnumerable(new[] { new OtherRow() }).Schema)));
        StringAssert.Contains(missing.Message, "Could not find text column 'Text'");
        var transform = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Model.Transform(numbers));
        StringAssert.Contains(transform.Message, "expected String, got Single");
    }

    [TestMethod]
    public void NoRowsIsAClearError()
    {
        var empty = _ml.Data.LoadFromEnumerable(new List<PluginTestData.TextRow>());
        var e = Assert.ThrowsExactly<ArgumentException>(() => _ml.Peer().LanguageModel(PluginTestData.TinyLanguageModel()).Fit(empty));
        StringAssert.Contains(e.Message, "no rows");
    }

    [TestMethod]
    public void CancelExecutionStopsTrainingPromptly()
    {
        var ml = new MLContext(seed: 1);
        var options = PluginTestData.TinyLanguageModel();
        options.Epochs = 10_000;
        var train = ml.Data.LoadFromEnumerable(PluginTestData.Sentences(300, seed: 1));
        int reports = 0;
        options.Progress = new Progress<PeerTrainingProgress>(_ => Interlocked.Increment(ref reports));
        var fit = Task.Run(() => ml.Peer().LanguageModel(options).Fit(train));
        Thread.Sleep(3000);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        PluginTestData.CancelExecution(ml);
        var e = Assert.ThrowsExactly<AggregateException>(() => fit.Wait(TimeSpan.FromSeconds(30)));
        Assert.IsInstanceOfType<OperationCanceledException>(e.InnerException);
        Assert.IsTrue(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed.TotalSeconds:F1} s to stop");
    }

    private sealed class NumberRow
    {
        public float Text { get; set; }
    }

    private sealed class OtherRow
    {
        public string Body { get; set; } = "";
    }
}
