using System.Text.Json.Nodes;
using Microsoft.ML.Data;
using Microsoft.ML.Peer.Data;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Tests.Interop;

namespace Microsoft.ML.Peer.Tests.MLNet;

/// <summary>
/// An ensemble (<see cref="PeerTextClassificationTrainer.Options.EnsembleSize"/>): its models differ, its scores are the mean of
/// theirs, and it saves, loads, exports and imports whole; a damaged ensemble file is refused naming the stream.
/// </summary>
[TestClass]
public sealed class ClassifierEnsembleTests
{
    private static readonly MLContext Ml = new(seed: 1);
    private static ITransformer? _pipeline;

    private static IDataView Train => Ml.Data.LoadFromEnumerable(PluginTestData.Topics(200, seed: 4, classes: 3));

    private static IDataView Test => Ml.Data.LoadFromEnumerable(PluginTestData.Topics(40, seed: 5, classes: 3));

    /// <summary>MapValueToKey → an ensemble of two small classifiers (held-out rows, early stopping, temperature, refit) →
    /// MapKeyToValue, trained once for the class.</summary>
    private static ITransformer Pipeline => _pipeline ??= Ml.Transforms.Conversion.MapValueToKey("Label")
        .Append(Ml.Peer().TextClassification(TwoModels()))
        .Append(Ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
        .Fit(Train);

    private static PeerTextClassificationTrainer.Options TwoModels()
    {
        var options = PluginTestData.TinyClassifier();
        options.Layers = 0;
        options.Epochs = 3;
        options.EnsembleSize = 2;
        return options;
    }

    private static PeerTextClassificationTransformer Classifier =>
        ((IEnumerable<ITransformer>)Pipeline).OfType<PeerTextClassificationTransformer>().Single();

    private static float[][] Scores(ITransformer model) => model.Transform(Test).GetColumn<float[]>("Score").ToArray();

    [TestMethod]
    public void TheScoresAreTheMeanOfTwoDifferentModels()
    {
        var members = Classifier.Members;
        Assert.HasCount(2, members);
        Assert.AreSame(Classifier.Model, members[0]);
        var first = members[0].state_dict();
        var second = members[1].state_dict();
        Assert.IsTrue(first.Any(p => !p.Value.allclose(second[p.Key])), "the two models were trained from different seeds");

        var texts = PluginTestData.Topics(40, seed: 5, classes: 3).Select(r => r.Text).ToArray();
        var scores = Scores(Pipeline);
        var ids = texts.Select(t => Classifier.Tokenizer.EncodeTruncated(t ?? "", Classifier.ModelOptions.InputLength, Classifier.Truncation)).ToArray();
        var a = members[0].PredictProbabilities(ids, batchSize: 8);
        var b = members[1].PredictProbabilities(ids, batchSize: 8);
        for (int i = 0; i < texts.Length; i++)
            for (int c = 0; c < 3; c++)
                Assert.AreEqual((a[i][c] + b[i][c]) / 2, scores[i][c], 1e-6, $"text {i}, class {c}");
        Assert.IsTrue(scores.Zip(a).Any(p => Math.Abs(p.First[0] - p.Second[0]) > 1e-4), "the mean is not the first model's scores");
        var metrics = Ml.MulticlassClassification.Evaluate(Pipeline.Transform(Test));
        Assert.IsTrue(metrics.MicroAccuracy >= 0.9, $"micro-accuracy {metrics.MicroAccuracy:F3}");
    }

    [TestMethod]
    public void AnEnsembleSavesAndLoadsWholeAndOneModelKeepsTheOlderFormat()
    {
        var m = new MemoryStream();
        Ml.Model.Save(Pipeline, Train.Schema, m);
        var zip = ModelZip.Read(m.ToArray());
        Assert.IsTrue(zip.Names.Any(n => n.EndsWith("/PeerWeights.1.bin", StringComparison.Ordinal)), string.Join(", ", zip.Names));
        Assert.AreEqual((0x00010003u, 0x00010003u), HeaderVersions(zip.PeerHeader), "an ensemble is readable only by versions that know it");
        m.Position = 0;
        var loaded = new MLContext().Model.Load(m, out _);
        var reloaded = ((IEnumerable<ITransformer>)loaded).OfType<PeerTextClassificationTransformer>().Single();
        Assert.HasCount(2, reloaded.Members);
        CollectionAssert.AreEqual(Classifier.Members.Select(x => x.Options.ScoreTemperature).ToArray(),
            reloaded.Members.Select(x => x.Options.ScoreTemperature).ToArray(), "each model keeps its own temperature");
        var before = Scores(Pipeline);
        var after = Scores(loaded);
        for (int i = 0; i < before.Length; i++) CollectionAssert.AreEqual(before[i], after[i], $"row {i}");
        (loaded as IDisposable)?.Dispose();

        // One model: the format (0x00010002, readable from 0x00010001) and the streams of the versions before ensembles.
        var options = TwoModels();
        options.EnsembleSize = 1;
        var keyed = Ml.Transforms.Conversion.MapValueToKey("Label").Fit(Train).Transform(Train);
        using var single = Ml.Peer().TextClassification(options).Fit(keyed);
        Assert.HasCount(1, single.Members);
        var s = new MemoryStream();
        Ml.Model.Save(single, null, s);
        var one = ModelZip.Read(s.ToArray());
        Assert.AreEqual((0x00010002u, 0x00010001u), HeaderVersions(one.PeerHeader));
        Assert.IsFalse(one.Names.Any(n => n.Contains("PeerWeights.1", StringComparison.Ordinal)));
    }

    /// <summary>ML.NET's model header (ModelHeader): the model's written and readable versions at 0x48 and 0x4C.</summary>
    private static (uint Written, uint Readable) HeaderVersions(byte[] header) =>
        (BitConverter.ToUInt32(header, 0x48), BitConverter.ToUInt32(header, 0x4C));

    [TestMethod]
    public void ADamagedEnsembleIsRefusedNamingTheStream()
    {
        var m = new MemoryStream();
        Ml.Model.Save(Classifier, null, m);
        var saved = ModelZip.Read(m.ToArray());

        // The second model's options describe another shape (resealed, so only the shape check can catch it).
        var reshaped = saved.Clone();
        var options = JsonNode.Parse(reshaped.ReadString("PeerOptions.1.json"))!.AsObject();
        options["ModelDimension"] = 64;
        reshaped.WriteString("PeerOptions.1.json", options.ToJsonString());
        reshaped.ResealChecksums();
        var e = SavedModelSafetyTests.LoadFails(reshaped.ToBytes());
        StringAssert.Contains(e.Message, "'PeerOptions.1.json'");
        StringAssert.Contains(e.Message, "ModelDimension is 64");

        // The second model's weights are missing.
        var cut = saved.Clone();
        cut.Remove("PeerWeights.1.bin");
        StringAssert.Contains(SavedModelSafetyTests.LoadFails(cut.ToBytes()).Message, "PeerWeights.1.bin");

        // The second model's weights are damaged (the checksum catches it).
        var damaged = saved.Clone();
        var weights = damaged["PeerWeights.1.bin"].ToArray();
        weights[^3] ^= 0x40;
        damaged["PeerWeights.1.bin"] = weights;
        var d = SavedModelSafetyTests.LoadFails(damaged.ToBytes());
        StringAssert.Contains(d.Message, "'PeerWeights.1.bin'");
        StringAssert.Contains(d.Message, "checksum");
    }

    [TestMethod]
    public void AnEnsembleExportsToOneSafetensorsFileAndImportsWhole()
    {
        string path = SafetensorsFiles.TemporaryPath("ensemble");
        try
        {
            Classifier.ExportSafetensors(path);
            using var imported = Ml.Peer().TextClassifierFromSafetensors(path, Classifier.Tokenizer);
            Assert.HasCount(2, imported.Members);
            var before = Scores(Classifier);
            var after = Scores(imported);
            for (int i = 0; i < before.Length; i++) CollectionAssert.AreEqual(before[i], after[i], $"row {i}");
            // The one-model reader says what the file holds instead of listing unexpected tensors.
            var e = Assert.ThrowsExactly<InvalidDataException>(() => PeerSafetensors.LoadTextClassifier(path));
            StringAssert.Contains(e.Message, "an ensemble of 2 models");

            // Damaged ensemble metadata is refused naming the key, before any model is built.
            foreach (var (key, value, expected) in new[]
            {
                ("peer.ensemble_size", "40", "'peer.ensemble_size' '40'; an ensemble has 2 to 32 models"),
                ("peer.ensemble_size", "two", "'peer.ensemble_size' 'two'"),
                ("peer.score_temperatures", "[1.0]", "its 'peer.score_temperatures' metadata is not 2 positive finite numbers"),
                ("peer.score_temperatures", "[1.0, -2.0]", "its 'peer.score_temperatures' metadata is not 2 positive finite numbers"),
                ("peer.score_temperatures", "not json", "its 'peer.score_temperatures' metadata is not 2 positive finite numbers"),
            })
            {
                string edited = SafetensorsFiles.Edited(path, h => h["__metadata__"]![key] = value);
                try
                {
                    var bad = Assert.ThrowsExactly<InvalidDataException>(() => Ml.Peer().TextClassifierFromSafetensors(edited, Classifier.Tokenizer));
                    StringAssert.Contains(bad.Message, expected, $"{key} = {value}");
                }
                finally
                {
                    File.Delete(edited);
                }
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void AnEnsembleSizeOutsideItsRangeIsRefusedByName()
    {
        foreach (int size in new[] { 0, -1, 33 })
        {
            var options = TwoModels();
            options.EnsembleSize = size;
            var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Ml.Peer().TextClassification(options));
            Assert.AreEqual("EnsembleSize", e.ParamName);
            StringAssert.Contains(e.Message, $"got {size}");
        }
    }
}
