using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Tests.Training;
using Microsoft.ML.Peer.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Tests.MLNet;

[TestClass]
public sealed class ClassifierFromLanguageModelTests
{
    [TestMethod]
    public void StartFromCopiesTheEmbeddingsAndBlocksAndLeavesTheHeadNew()
    {
        var lmOptions = TinyLanguageModels.Options(FeedForwardKind.Peer);
        manual_seed(3);
        using var languageModel = new TransformerLanguageModel(lmOptions);
        var options = TextClassifierOptions.LikeLanguageModel(lmOptions, classCount: 3, paddingId: 0);
        using var trainer = new TextClassifierTrainingLoop(options, new ClassifierTrainingOptions { Seed = 1 });
        int copied = trainer.StartFrom(languageModel);

        var source = languageModel.state_dict();
        var target = trainer.Model.state_dict();
        var shared = target.Keys.Where(source.ContainsKey).ToList();
        Assert.AreEqual(shared.Count, copied);
        foreach (var prefix in new[] { "token_embedding.", "position_embedding.", "blocks.0.", "blocks.1.", "final_norm." })
            Assert.IsTrue(shared.Any(n => n.StartsWith(prefix, StringComparison.Ordinal)), $"nothing under {prefix} was copied");
        foreach (var name in shared) Assert.IsTrue(source[name].equal(target[name]).all().item<bool>(), $"{name} differs");
        Assert.IsTrue(target.Keys.Any(n => n.StartsWith("head.", StringComparison.Ordinal) && !source.ContainsKey(n)), "the head is the classifier's own");

        var wider = TextClassifierOptions.LikeLanguageModel(lmOptions, classCount: 3, paddingId: 0);
        wider.ModelDimension *= 2;
        using var mismatched = new TextClassifierTrainingLoop(wider, new ClassifierTrainingOptions { Seed = 1 });
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => mismatched.StartFrom(languageModel)).Message, "token_embedding");
    }

    [TestMethod]
    public void LikeLanguageModelCopiesEveryTransformerSetting()
    {
        // Every shared setting gets a value here that the classifier's own default does not have, so a setting added to
        // TransformerOptions later fails this test until it is both copied and given such a value here.
        var lm = TinyLanguageModels.Options(FeedForwardKind.MoE);
        lm.DenseHiddenDimension = 48;
        lm.SparseBlocks = new[] { 0, 1 };
        lm.MoeExperts = 6;
        lm.MoeTopK = 3;
        lm.MoeHiddenDimension = 24;
        lm.MoeLoadBalancingWeight = 0.05;
        lm.Peer.QueryWhitening = true;
        lm.ProductKeyMemory.NormalizeSubKeys = true;
        var copy = TextClassifierOptions.LikeLanguageModel(lm, classCount: 3, paddingId: 0);
        var defaults = new TextClassifierOptions();
        static string Json(object? value) => System.Text.Json.JsonSerializer.Serialize(value);
        var settings = typeof(TransformerOptions).GetProperties(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance)
            .Where(p => p.CanWrite && p.DeclaringType == typeof(TransformerOptions)).ToList();
        Assert.IsTrue(settings.Count >= 14, $"found {settings.Count} settings");
        foreach (var setting in settings)
        {
            Assert.AreNotEqual(Json(setting.GetValue(defaults)), Json(setting.GetValue(lm)),
                $"give {setting.Name} a value here that differs from the classifier's default");
            Assert.AreEqual(Json(setting.GetValue(lm)), Json(setting.GetValue(copy)), $"{setting.Name} was not copied");
        }
        Assert.AreNotSame(lm.Peer, copy.Peer, "a deep copy");
    }

    [TestMethod]
    public void AClassifierStartsFromATrainedLanguageModelAndSavesWithItsTokenizer()
    {
        var ml = new MLContext(seed: 1);
        var texts = ml.Data.LoadFromEnumerable(PluginTestData.Topics(300, seed: 5, classes: 3));
        using var languageModel = ml.Peer().LanguageModel(PluginTestData.TinyLanguageModel()).Fit(texts);
        var options = PluginTestData.TinyClassifier();
        options.LanguageModel = languageModel;
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.Peer().TextClassification(options))
            .Fit(ml.Data.LoadFromEnumerable(PluginTestData.Topics(200, seed: 1, classes: 3)));
        var classifier = ((IEnumerable<ITransformer>)model).OfType<PeerTextClassificationTransformer>().Single();
        Assert.AreEqual(languageModel.ModelOptions.ContextLength, classifier.ModelOptions.ContextLength, "the language model's shape");
        Assert.AreEqual(languageModel.ModelOptions.Layers, classifier.ModelOptions.Layers);
        Assert.AreEqual(languageModel.Tokenizer.VocabularySize, classifier.Tokenizer.VocabularySize, "the language model's tokenizer");

        var test = ml.Data.LoadFromEnumerable(PluginTestData.Topics(100, seed: 2, classes: 3));
        var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
        Assert.IsTrue(metrics.MicroAccuracy >= 0.9, $"micro-accuracy {metrics.MicroAccuracy:F3}");
        using var stream = new MemoryStream();
        ml.Model.Save(model, null, stream);
        stream.Position = 0;
        var loaded = ml.Model.Load(stream, out _);
        Assert.AreEqual(metrics.MicroAccuracy, ml.MulticlassClassification.Evaluate(loaded.Transform(test)).MicroAccuracy);
    }

    [TestMethod]
    public void PretrainingReadsTheUnlabeledTextsAndTheRowsWithoutLabels()
    {
        var ml = new MLContext(seed: 1);
        var log = new List<string>();
        ml.Log += (_, e) => { if (e.Source.Contains("Peer", StringComparison.Ordinal)) lock (log) log.Add(e.Message); };
        var options = PluginTestData.TinyClassifier();
        options.Pretraining = PluginTestData.TinyLanguageModel();
        options.UnlabeledData = ml.Data.LoadFromEnumerable(PluginTestData.Topics(150, seed: 7, classes: 3).Select(r => new { r.Text }));
        var labelled = PluginTestData.Topics(120, seed: 1, classes: 3);
        // A quarter of the rows have no label: the classifier skips them, pre-training reads them.
        var rows = labelled.Select((r, i) => new { r.Text, Label = i % 4 == 0 ? "" : r.Label }).ToList();
        var data = ml.Data.LoadFromEnumerable(rows);
        var keys = ml.Transforms.Conversion.MapValueToKey("Label", keyData: ml.Data.LoadFromEnumerable(labelled.Select(r => new { r.Label })))
            .Fit(data);
        var keyed = new CursorCountingView(keys.Transform(data));
        using var model = ml.Peer().TextClassification(options).Fit(keyed);
        Assert.AreEqual(1, keyed.Cursors, "the training data is read once, for the classifier and the pre-training alike");
        string[] lines;
        lock (log) lines = log.ToArray();
        Assert.IsTrue(lines.Any(l => l.Contains("Pre-training a language model on 270 texts", StringComparison.Ordinal)),
            string.Join('\n', lines.Where(l => l.Contains("Pre-training", StringComparison.Ordinal))));
        Assert.IsTrue(lines.Any(l => l.Contains("Starting from the language model's weights", StringComparison.Ordinal)));
        var metrics = ml.MulticlassClassification.Evaluate(
            model.Transform(keys.Transform(ml.Data.LoadFromEnumerable(PluginTestData.Topics(100, 2, 3)))));
        Assert.IsTrue(metrics.MicroAccuracy >= 0.9, $"micro-accuracy {metrics.MicroAccuracy:F3}");
    }

    /// <summary>Passes everything to the view it wraps and counts the cursors opened on it.</summary>
    private sealed class CursorCountingView(IDataView inner) : IDataView
    {
        public int Cursors { get; private set; }
        public bool CanShuffle => inner.CanShuffle;
        public DataViewSchema Schema => inner.Schema;
        public long? GetRowCount() => inner.GetRowCount();

        public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
        {
            Cursors++;
            return inner.GetRowCursor(columnsNeeded, rand);
        }

        public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
        {
            Cursors++;
            return inner.GetRowCursorSet(columnsNeeded, n, rand);
        }
    }

    [TestMethod]
    public void StartingPointsThatContradictEachOtherAreRefusedByName()
    {
        var ml = new MLContext(seed: 1);
        using var languageModel = ml.Peer().LanguageModel(PluginTestData.TinyLanguageModel())
            .Fit(ml.Data.LoadFromEnumerable(PluginTestData.Topics(100, seed: 5)));
        var both = PluginTestData.TinyClassifier();
        both.LanguageModel = languageModel;
        both.Pretraining = PluginTestData.TinyLanguageModel();
        Assert.AreEqual(nameof(both.Pretraining), Assert.ThrowsExactly<ArgumentException>(() => ml.Peer().TextClassification(both)).ParamName);
        var unlabeled = PluginTestData.TinyClassifier();
        unlabeled.UnlabeledData = ml.Data.LoadFromEnumerable(PluginTestData.Topics(10, seed: 5));
        Assert.AreEqual(nameof(unlabeled.UnlabeledData),
            Assert.ThrowsExactly<ArgumentException>(() => ml.Peer().TextClassification(unlabeled)).ParamName);
        var badLanguageModel = PluginTestData.TinyClassifier();
        badLanguageModel.Pretraining = PluginTestData.TinyLanguageModel();
        badLanguageModel.Pretraining.Experts = 1000;
        Assert.AreEqual("Experts", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Peer().TextClassification(badLanguageModel)).ParamName);
    }

    [TestMethod]
    public void RefitTrainsAgainOnEveryRowForTheEpochsKeptWithTheTemperatureFitted()
    {
        var ml = new MLContext(seed: 1);
        var log = new List<string>();
        ml.Log += (_, e) => { if (e.Source.Contains("Peer", StringComparison.Ordinal)) lock (log) log.Add(e.Message); };
        var options = PluginTestData.TinyClassifier();
        options.ValidationFraction = 0.2;
        options.RefitOnAllRows = true;
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.Peer().TextClassification(options))
            .Fit(ml.Data.LoadFromEnumerable(PluginTestData.Topics(200, seed: 1, classes: 3)));
        string[] lines;
        lock (log) lines = log.ToArray();
        var kept = lines.Select(l => System.Text.RegularExpressions.Regex.Match(l, @"kept epoch (\d+)'s weights, score temperature ([0-9]+\.[0-9]+)"))
            .Single(m => m.Success);
        Assert.IsTrue(lines.Any(l => l.Contains("Refitted on all 200 rows", StringComparison.Ordinal)), string.Join('\n', lines.TakeLast(5)));
        int epochs = int.Parse(kept.Groups[1].Value);
        Assert.AreEqual(epochs, lines.Count(l => l.Contains(": train loss", StringComparison.Ordinal) && !l.Contains("validation", StringComparison.Ordinal)),
            "the refit's epochs report no validation");
        var classifier = ((IEnumerable<ITransformer>)model).OfType<PeerTextClassificationTransformer>().Single();
        Assert.AreEqual(double.Parse(kept.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture), classifier.ModelOptions.ScoreTemperature, 5e-4);
    }
}
