using System.Reflection;
using Microsoft.ML.Data;
using Microsoft.ML.Peer.Data;
using Microsoft.ML.Peer.Models;

namespace Microsoft.ML.Peer.Tests.MLNet;

[TestClass]
public sealed class PeerTextClassificationTests
{
    private static readonly MLContext Ml = new(seed: 1);
    private static ITransformer? _pipeline;
    private static readonly List<string> Log = new();

    /// <summary>The issue's pipeline, trained once for the class: MapValueToKey → PEER classifier → MapKeyToValue.</summary>
    private static ITransformer Pipeline
    {
        get
        {
            if (_pipeline is null)
            {
                Ml.Log += (_, e) => { if (e.Source.Contains("Peer", StringComparison.Ordinal)) lock (Log) Log.Add(e.Message); };
                var train = Ml.Data.LoadFromEnumerable(PluginTestData.Topics(400, seed: 1, classes: 3));
                var validation = Ml.Data.LoadFromEnumerable(PluginTestData.Topics(60, seed: 9, classes: 3));
                var options = PluginTestData.TinyClassifier();
                options.ValidationSet = Ml.Transforms.Conversion.MapValueToKey("Label").Fit(train).Transform(validation);
                _pipeline = Ml.Transforms.Conversion.MapValueToKey("Label")
                    .Append(Ml.Peer().TextClassification(options))
                    .Append(Ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
                    .Fit(train);
            }
            return _pipeline;
        }
    }

    private static PeerTextClassificationTransformer Classifier =>
        ((IEnumerable<ITransformer>)Pipeline).OfType<PeerTextClassificationTransformer>().Single();

    private static IDataView Test => Ml.Data.LoadFromEnumerable(PluginTestData.Topics(100, seed: 2, classes: 3));

    [TestMethod]
    public void MulticlassEvaluatorWorksUnchangedAndTheModelLearns()
    {
        var scored = Pipeline.Transform(Test);
        var metrics = Ml.MulticlassClassification.Evaluate(scored);
        Assert.IsTrue(metrics.MicroAccuracy >= 0.95, $"micro-accuracy {metrics.MicroAccuracy:F3}");
        var score = scored.Schema["Score"];
        Assert.AreEqual(new VectorDataViewType(NumberDataViewType.Single, 3), score.Type);
        VBuffer<ReadOnlyMemory<char>> slots = default;
        score.GetSlotNames(ref slots);
        CollectionAssert.AreEquivalent(new[] { "animals", "food", "travel" }, slots.DenseValues().Select(s => s.ToString()).ToArray());
        // MapKeyToValue turned the predicted key back into the label's own strings.
        var predicted = scored.GetColumn<string>("PredictedLabel").ToArray();
        var truth = PluginTestData.Topics(100, seed: 2, classes: 3).Select(r => r.Label).ToArray();
        Assert.IsTrue(predicted.Zip(truth).Count(p => p.First == p.Second) >= 95);
        var probabilities = scored.GetColumn<float[]>("Score").ToArray();
        Assert.IsTrue(probabilities.All(p => Math.Abs(p.Sum() - 1) < 1e-4), "scores are probabilities");
    }

    [TestMethod]
    public void ValidationMetricsAreReportedPerEpoch()
    {
        _ = Pipeline;
        string[] lines;
        lock (Log) lines = Log.ToArray();
        // Early stopping may end the fit before Epochs; every epoch up to where it ended is reported, then the epoch kept.
        var kept = lines.Select(l => System.Text.RegularExpressions.Regex.Match(l, @"kept epoch (\d+)'s weights, score temperature"))
            .Single(m => m.Success);
        int epochs = lines.Count(l => l.Contains(": train loss", StringComparison.Ordinal));
        Assert.IsTrue(epochs >= 1 && epochs <= PluginTestData.TinyClassifier().Epochs, $"{epochs} epoch reports");
        Assert.IsTrue(int.Parse(kept.Groups[1].Value) <= epochs);
        for (int epoch = 1; epoch <= epochs; epoch++)
            Assert.IsTrue(lines.Any(l => l.Contains($"epoch {epoch}:", StringComparison.Ordinal) &&
                l.Contains("validation", StringComparison.Ordinal) && l.Contains("accuracy", StringComparison.Ordinal)),
                $"no validation report for epoch {epoch} in:\n{string.Join('\n', lines.TakeLast(20))}");
    }

    [TestMethod]
    public void TheScoreTemperatureFittedOnValidationIsSavedWithTheModel()
    {
        double temperature = Classifier.ModelOptions.ScoreTemperature;
        Assert.AreNotEqual(1.0, temperature, "the fit calibrated the scores on the validation set");
        using var stream = new MemoryStream();
        Ml.Model.Save(Pipeline, null, stream);
        stream.Position = 0;
        var loaded = Ml.Model.Load(stream, out _);
        var reloaded = ((IEnumerable<ITransformer>)loaded).OfType<PeerTextClassificationTransformer>().Single();
        Assert.AreEqual(temperature, reloaded.ModelOptions.ScoreTemperature);
        CollectionAssert.AreEqual(Classifier.PredictProbabilities("the cat and the dog"), reloaded.PredictProbabilities("the cat and the dog"));
        reloaded.Dispose();
    }

    [TestMethod]
    public void PoolingAndTokenPairsReachTheModelAndSurviveSaveAndLoad()
    {
        Assert.AreEqual(TextPooling.Attention, Classifier.ModelOptions.Pooling, "the default pooling, with blocks too");
        var options = PluginTestData.TinyClassifier();
        options.Layers = 0;
        options.Epochs = 2;
        options.Pooling = TextPooling.MeanAndMax;
        options.BigramBuckets = 512;
        var train = Ml.Data.LoadFromEnumerable(PluginTestData.Topics(120, seed: 3, classes: 3));
        var pipeline = Ml.Transforms.Conversion.MapValueToKey("Label").Append(Ml.Peer().TextClassification(options)).Fit(train);
        using var classifier = ((IEnumerable<ITransformer>)pipeline).OfType<PeerTextClassificationTransformer>().Single();
        Assert.AreEqual((TextPooling.MeanAndMax, 512), (classifier.ModelOptions.Pooling, classifier.ModelOptions.BigramBuckets));
        using var stream = new MemoryStream();
        Ml.Model.Save(pipeline, null, stream);
        stream.Position = 0;
        var loaded = Ml.Model.Load(stream, out _);
        using var reloaded = ((IEnumerable<ITransformer>)loaded).OfType<PeerTextClassificationTransformer>().Single();
        Assert.AreEqual((TextPooling.MeanAndMax, 512), (reloaded.ModelOptions.Pooling, reloaded.ModelOptions.BigramBuckets));
        CollectionAssert.AreEqual(classifier.PredictProbabilities("the cat and the dog"), reloaded.PredictProbabilities("the cat and the dog"));
    }

    [TestMethod]
    public void TheLinearBagReadsPastTheEncodersTokensAndIsSavedWithTheModel()
    {
        var train = Ml.Data.LoadFromEnumerable(PluginTestData.Topics(120, seed: 3));
        // The encoder reads each text's first 2 and last 2 tokens; the bag up to 64.
        PeerTextClassificationTransformer Train(bool linearBag)
        {
            var options = PluginTestData.TinyClassifier();
            options.MaxSequenceLength = 4;
            options.LinearBagLength = 64;
            options.LinearBag = linearBag;
            var model = Ml.Transforms.Conversion.MapValueToKey("Label").Append(Ml.Peer().TextClassification(options)).Fit(train);
            return ((IEnumerable<ITransformer>)model).OfType<PeerTextClassificationTransformer>().Single();
        }
        const string Before = "today we talked about the {0} and the cake and a very nice day today";
        float[] Score(PeerTextClassificationTransformer t, string middle) => t.PredictProbabilities(string.Format(Before, middle));

        using var withBag = Train(linearBag: true);
        Assert.AreEqual((true, 4, 64, TextClassifierOptions.RecommendedLinearBagBuckets(2)),
            (withBag.ModelOptions.LinearBag, withBag.ModelOptions.ContextLength, withBag.ModelOptions.InputLength, withBag.ModelOptions.LinearBagBuckets));
        Assert.AreNotEqual(Score(withBag, "cat")[0], Score(withBag, "bread")[0], "a word in the middle reaches the score through the bag");
        using var withoutBag = Train(linearBag: false);
        Assert.AreEqual((false, 4), (withoutBag.ModelOptions.LinearBag, withoutBag.ModelOptions.InputLength));
        CollectionAssert.AreEqual(Score(withoutBag, "cat"), Score(withoutBag, "bread"), "without the bag the encoder alone reads the ends");

        using var stream = new MemoryStream();
        Ml.Model.Save(withBag, null, stream);
        stream.Position = 0;
        using var reloaded = (PeerTextClassificationTransformer)Ml.Model.Load(stream, out _);
        Assert.AreEqual(withBag.ModelOptions.InputLength, reloaded.ModelOptions.InputLength);
        CollectionAssert.AreEqual(Score(withBag, "cat"), Score(reloaded, "cat"));

        var bad = PluginTestData.TinyClassifier();
        bad.LinearBagLength = 0;
        Assert.AreEqual("LinearBagLength", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Ml.Peer().TextClassification(bad)).ParamName);
    }

    [TestMethod]
    public void AModelThatCannotLearnTheTaskKeepsItsScoresNearUniform()
    {
        // Two telling words in the middle of 1,200 filler tokens: the encoder reads neither (its 512 tokens are filler) and the
        // linear bag sees them at 1/√1,202 of their weight, so the defaults barely learn the task in 300 rows. The temperature
        // fitted on 29 held-out rows sharpened by 22 times and made the refit's test log-loss 2.69; it must not be used there.
        var random = new Random(3);
        string[] a = { "invoice", "payment", "refund", "receipt", "balance" }, b = { "kernel", "driver", "module", "socket", "thread" };
        string filler = string.Join(' ', Enumerable.Repeat("the of and a to in is it that was", 60));
        var rows = Enumerable.Range(0, 400).Select(i =>
        {
            var words = i % 2 == 0 ? a : b;
            return new PluginTestData.LabeledText
            {
                Label = i % 2 == 0 ? "billing" : "systems",
                Text = $"{filler} {words[random.Next(5)]} {words[random.Next(5)]} {filler}",
            };
        }).ToList();
        var ml = new MLContext(seed: 1);
        var split = ml.Data.TrainTestSplit(ml.Data.LoadFromEnumerable(rows), testFraction: 0.25, seed: 1);
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.Peer().TextClassification("Label", "Text")).Fit(split.TrainSet);
        var metrics = ml.MulticlassClassification.Evaluate(model.Transform(split.TestSet));
        Assert.IsTrue(metrics.LogLoss < 0.75, $"log-loss {metrics.LogLoss:F3} (ln 2 = 0.693)");
    }

    [TestMethod]
    public void BigramBucketsAreIgnoredWithBlocksAndBadValuesAreNamed()
    {
        var options = PluginTestData.TinyClassifier();
        options.BigramBuckets = 512;
        Assert.AreEqual(0, options.ModelOptions(vocabularySize: 300, classCount: 2, paddingId: 0).BigramBuckets, "blocks read no pairs");
        options.Layers = 0;
        options.BigramBuckets = -1;
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Ml.Peer().TextClassification(options));
        Assert.AreEqual("BigramBuckets", e.ParamName);
        options.BigramBuckets = 0;
        options.TokenDropout = 1;
        Assert.AreEqual("TokenDropout", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Ml.Peer().TextClassification(options)).ParamName);
        options.TokenDropout = 0.25;
        Assert.AreEqual(0.25, options.ModelOptions(vocabularySize: 300, classCount: 2, paddingId: 0).TokenDropout, "reaches the model");
    }

    [TestMethod]
    public void ASamplingKeyThatIsNotATextColumnIsNamedBeforeTraining()
    {
        var options = PluginTestData.TinyClassifier();
        options.SamplingKeyColumnName = "Label";
        var keyed = Ml.Transforms.Conversion.MapValueToKey("Label").Fit(Ml.Data.LoadFromEnumerable(PluginTestData.Topics(40, seed: 1)))
            .Transform(Ml.Data.LoadFromEnumerable(PluginTestData.Topics(40, seed: 1)));
        var estimator = Ml.Peer().TextClassification(options);
        foreach (var e in new Exception[]
                 {
                     Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => estimator.Fit(keyed)),
                     Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => estimator.GetOutputSchema(PluginTestData.Shape(keyed.Schema))),
                 })
        {
            StringAssert.Contains(e.Message, "SamplingKeyColumnName");
            StringAssert.Contains(e.Message, "'Label'");
        }
        options.SamplingKeyColumnName = "Document";
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Ml.Peer().TextClassification(options).Fit(keyed)).Message,
            "'Document'");
    }

    [TestMethod]
    public void EarlyStoppingOptionsOutOfRangeAreRefusedByName()
    {
        foreach (var fraction in new[] { -0.1, 1.0, double.NaN })
        {
            var options = PluginTestData.TinyClassifier();
            options.ValidationFraction = fraction;
            Assert.AreEqual(nameof(options.ValidationFraction),
                Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Ml.Peer().TextClassification(options)).ParamName);
        }
        var patience = PluginTestData.TinyClassifier();
        patience.EarlyStoppingPatience = -1;
        Assert.AreEqual(nameof(patience.EarlyStoppingPatience),
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Ml.Peer().TextClassification(patience)).ParamName);
        var steps = PluginTestData.TinyClassifier();
        steps.MinimumStepsPerEpoch = -1;
        Assert.AreEqual(nameof(steps.MinimumStepsPerEpoch),
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Ml.Peer().TextClassification(steps)).ParamName);
    }

    [TestMethod]
    public void ProgressCountsTheTimeLeftForTheWholeFit()
    {
        var reports = new List<PeerTrainingProgress>();
        var options = PluginTestData.TinyClassifier();
        options.Epochs = 3;
        options.EarlyStoppingPatience = 0;
        options.Progress = new SynchronousProgress(reports.Add);
        var train = Ml.Data.LoadFromEnumerable(PluginTestData.Topics(120, seed: 3, classes: 2));
        Ml.Transforms.Conversion.MapValueToKey("Label").Append(Ml.Peer().TextClassification(options)).Fit(train);

        var epochEnds = reports.GroupBy(r => r.Epoch).Select(g => g.Last()).ToList();
        Assert.AreEqual(3, epochEnds.Count);
        foreach (var r in epochEnds.SkipLast(1))
            Assert.IsTrue(r.Remaining > TimeSpan.Zero,
                $"epoch {r.Epoch} of 3 ended at step {r.Step}/{r.TotalSteps} with ETA {r.Remaining}: epochs remain");
        Assert.AreEqual(TimeSpan.Zero, epochEnds[^1].Remaining, "nothing remains after the last epoch");
        Assert.AreEqual(epochEnds[^1].TotalSteps, epochEnds[^1].Step);
    }

    private sealed class SynchronousProgress(Action<PeerTrainingProgress> report) : IProgress<PeerTrainingProgress>
    {
        public void Report(PeerTrainingProgress value) => report(value);
    }

    [TestMethod]
    public void CrossValidateRunsFiveFoldsWithTheTrainerInThePipeline()
    {
        var data = Ml.Data.LoadFromEnumerable(PluginTestData.Topics(250, seed: 11, classes: 3));
        var options = PluginTestData.TinyClassifier();
        options.Epochs = 3;
        var pipeline = Ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(Ml.Peer().TextClassification(options))
            .Append(Ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
        var folds = Ml.MulticlassClassification.CrossValidate(data, pipeline, numberOfFolds: 5, labelColumnName: "Label");
        Assert.AreEqual(5, folds.Count);
        foreach (var fold in folds)
        {
            Assert.IsTrue(fold.Metrics.MicroAccuracy > 0.6, $"fold {fold.Fold}: micro-accuracy {fold.Metrics.MicroAccuracy:F3}");
            Assert.IsTrue(fold.Metrics.LogLoss < Math.Log(3),
                $"fold {fold.Fold}: log-loss {fold.Metrics.LogLoss} is no better than guessing");
            // The scored fold keeps the types a user reads: the label's own strings back from the key, and probabilities.
            Assert.AreEqual(TextDataViewType.Instance, fold.ScoredHoldOutSet.Schema["PredictedLabel"].Type);
            Assert.AreEqual(new VectorDataViewType(NumberDataViewType.Single, 3), fold.ScoredHoldOutSet.Schema["Score"].Type);
            ((IDisposable?)(fold.Model as IDisposable))?.Dispose();
        }
    }

    [TestMethod]
    public void ABinaryLabelWorks()
    {
        var train = Ml.Data.LoadFromEnumerable(PluginTestData.Topics(300, seed: 3, classes: 2));
        var model = Ml.Transforms.Conversion.MapValueToKey("Label").Append(Ml.Peer().TextClassification(PluginTestData.TinyClassifier()))
            .Fit(train);
        var scored = model.Transform(Ml.Data.LoadFromEnumerable(PluginTestData.Topics(80, seed: 4, classes: 2)));
        var metrics = Ml.MulticlassClassification.Evaluate(scored);
        Assert.IsTrue(metrics.MicroAccuracy >= 0.95, $"micro-accuracy {metrics.MicroAccuracy:F3}");
        Assert.AreEqual(2, ((VectorDataViewType)scored.Schema["Score"].Type).Size);
    }

    /// <summary>The two-class recipe of docs/ml-net-plugin.md: the second class's probability as a binary score.</summary>
    private sealed class TwoClassScores
    {
        [KeyType(2)]
        public uint Label { get; set; }

        [VectorType(2)]
        public float[] Score { get; set; } = Array.Empty<float>();
    }

    private sealed class BinaryColumns
    {
        public bool IsSecondClass { get; set; }

        // The evaluator thresholds its score column at 0, so the score is the log-odds, not the probability.
        public float LogOdds { get; set; }

        public float Probability { get; set; }

        public bool PredictedSecondClass { get; set; }
    }

    [TestMethod]
    public void ATwoClassModelIsEvaluatedByTheBinaryEvaluatorThroughTheDocumentedMapping()
    {
        var train = Ml.Data.LoadFromEnumerable(PluginTestData.Topics(300, seed: 3, classes: 2));
        // Keys by value: "animals" is key 1, "food" key 2, so Score[1] is P(food).
        var byValue = Microsoft.ML.Transforms.ValueToKeyMappingEstimator.KeyOrdinality.ByValue;
        var model = Ml.Transforms.Conversion.MapValueToKey("Label", keyOrdinality: byValue)
            .Append(Ml.Peer().TextClassification(PluginTestData.TinyClassifier()))
            .Fit(train);
        var scored = model.Transform(Ml.Data.LoadFromEnumerable(PluginTestData.Topics(80, seed: 4, classes: 2)));
        var binary = Ml.Transforms.CustomMapping<TwoClassScores, BinaryColumns>((input, output) =>
        {
            output.IsSecondClass = input.Label == 2;
            output.Probability = input.Score[1];
            output.LogOdds = MathF.Log(input.Score[1]) - MathF.Log(input.Score[0]);
            output.PredictedSecondClass = input.Score[1] > 0.5f;
        }, contractName: null).Fit(scored).Transform(scored);
        var metrics = Ml.BinaryClassification.Evaluate(binary, labelColumnName: nameof(BinaryColumns.IsSecondClass),
            scoreColumnName: nameof(BinaryColumns.LogOdds), probabilityColumnName: nameof(BinaryColumns.Probability),
            predictedLabelColumnName: nameof(BinaryColumns.PredictedSecondClass));
        var multiclass = Ml.MulticlassClassification.Evaluate(scored);
        Assert.IsTrue(metrics.AreaUnderRocCurve > 0.95, $"AUC {metrics.AreaUnderRocCurve:F3}");
        Assert.AreEqual(multiclass.MicroAccuracy, metrics.Accuracy, 1e-9, "the same predictions, counted by both evaluators");
        Assert.IsTrue(metrics.LogLoss < Math.Log(2), $"log-loss {metrics.LogLoss:F3}");
    }

    [TestMethod]
    public void EmptyAndNullTextsAreScored()
    {
        var rows = new[] { new PluginTestData.LabeledText { Text = null, Label = "food" },
            new PluginTestData.LabeledText { Text = "", Label = "food" } };
        var scored = Pipeline.Transform(Ml.Data.LoadFromEnumerable(rows));
        var scores = scored.GetColumn<float[]>("Score").ToArray();
        Assert.AreEqual(2, scores.Length);
        Assert.IsTrue(scores.All(s => s.Length == 3 && s.All(float.IsFinite) && Math.Abs(s.Sum() - 1) < 1e-4));
        CollectionAssert.AreEqual(scores[0], scores[1], "a missing text reads as the empty text");
    }

    [TestMethod]
    public void TextsLongerThanMaxSequenceLengthKeepTheirStartAndEnd()
    {
        // The linear bag reads the first 1,024 and the last 1,024 tokens (the encoder 16 and 16 of those, MaxSequenceLength 32);
        // what lies between must not change the scores.
        Assert.AreEqual(2048, Classifier.ModelOptions.InputLength);
        string start = string.Join(' ', Enumerable.Repeat("cat dog horse", 700));
        string end = string.Join(' ', Enumerable.Repeat("today we talked", 700));
        var a = Classifier.PredictProbabilities($"{start} bread cheese soup rice cake apple {end}");
        var b = Classifier.PredictProbabilities($"{start} train car boat plane bus bike {end}");
        CollectionAssert.AreEqual(a, b);
        Assert.AreEqual(TextTruncation.KeepStartAndEnd, Classifier.Truncation);
        CollectionAssert.AreNotEqual(a,
            Classifier.PredictProbabilities($"{start} {string.Join(' ', Enumerable.Repeat("bread cheese soup", 20))}"));
    }

    [TestMethod]
    public void TruncationModesPickTheDocumentedTokens()
    {
        var tokenizer = Microsoft.ML.Peer.Data.CompactTokenizer.Build(new[] { "a b c d e f g h i j" }, 300);
        string text = "a b c d e f g h i j";
        var all = tokenizer.Encode(text);
        Assert.IsTrue(all.Length >= 10);
        CollectionAssert.AreEqual(all[..5], tokenizer.EncodeTruncated(text, 5, TextTruncation.KeepStart));
        CollectionAssert.AreEqual(all[..3].Concat(all[^2..]).ToArray(), tokenizer.EncodeTruncated(text, 5, TextTruncation.KeepStartAndEnd));
        CollectionAssert.AreEqual(all, tokenizer.EncodeTruncated(text, all.Length, TextTruncation.KeepStartAndEnd));
    }

    [TestMethod]
    public void MissingOrWrongTextColumnIsNamed()
    {
        var estimator = Ml.Peer().TextClassification(PluginTestData.TinyClassifier());
        var noText = Ml.Transforms.Conversion.MapValueToKey("Label").Fit(Ml.Data.LoadFromEnumerable(new[] { new BodyRow() }))
            .Transform(Ml.Data.LoadFromEnumerable(new[] { new BodyRow() }));
        var missing = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => estimator.Fit(noText));
        StringAssert.Contains(missing.Message, "Could not find text column 'Text'");
        StringAssert.Contains(missing.Message, "'Body'");
        var schemaMissing =
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => estimator.GetOutputSchema(PluginTestData.Shape(noText.Schema)));
        StringAssert.Contains(schemaMissing.Message, "Could not find text column 'Text'");

        var numeric = Ml.Transforms.Conversion.MapValueToKey("Label").Fit(Ml.Data.LoadFromEnumerable(new[] { new NumericTextRow() }))
            .Transform(Ml.Data.LoadFromEnumerable(new[] { new NumericTextRow() }));
        var wrong = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => estimator.Fit(numeric));
        StringAssert.Contains(wrong.Message, "text column 'Text': expected String, got Single");
        var schemaWrong =
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => estimator.GetOutputSchema(PluginTestData.Shape(numeric.Schema)));
        StringAssert.Contains(schemaWrong.Message, "expected String, got Single");
        var atTransform = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Classifier.Transform(numeric));
        StringAssert.Contains(atTransform.Message, "expected String, got Single");
    }

    [TestMethod]
    public void MissingOrNonKeyLabelIsNamed()
    {
        var estimator = Ml.Peer().TextClassification(PluginTestData.TinyClassifier());
        var rawLabel = Ml.Data.LoadFromEnumerable(PluginTestData.Topics(10, seed: 1));
        var notKey = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => estimator.Fit(rawLabel));
        StringAssert.Contains(notKey.Message, "label column 'Label': expected Key<UInt32> (map it with MapValueToKey), got String");
        var schemaNotKey =
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => estimator.GetOutputSchema(PluginTestData.Shape(rawLabel.Schema)));
        StringAssert.Contains(schemaNotKey.Message, "label column 'Label'");
        var noLabel = Ml.Data.LoadFromEnumerable(PluginTestData.Sentences(5, 1));
        var missing =
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Ml.Peer().TextClassification(labelColumnName: "Category").Fit(noLabel));
        StringAssert.Contains(missing.Message, "Could not find label column 'Category'");
    }

    [TestMethod]
    public void OneClassOrNoRowsIsAClearError()
    {
        var oneClass = PluginTestData.Topics(40, seed: 1, classes: 3).Where(r => r.Label == "food").ToList();
        var keyed = Ml.Transforms.Conversion.MapValueToKey("Label").Fit(Ml.Data.LoadFromEnumerable(PluginTestData.Topics(40, 1, 3)))
            .Transform(Ml.Data.LoadFromEnumerable(oneClass));
        var e = Assert.ThrowsExactly<ArgumentException>(() => Ml.Peer().TextClassification(PluginTestData.TinyClassifier()).Fit(keyed));
        StringAssert.Contains(e.Message, "one class only ('food'");
        var empty = Ml.Transforms.Conversion.MapValueToKey("Label").Fit(Ml.Data.LoadFromEnumerable(PluginTestData.Topics(40, 1, 3)))
            .Transform(Ml.Data.LoadFromEnumerable(new List<PluginTestData.LabeledText>()));
        var none = Assert.ThrowsExactly<ArgumentException>(() => Ml.Peer().TextClassification(PluginTestData.TinyClassifier()).Fit(empty));
        StringAssert.Contains(none.Message, "no rows");
    }

    [TestMethod]
    public void SaveAndLoadReproduceEveryScoreHereAndInANewProcess()
    {
        string path = ModelFiles.TemporaryPath("classifier");
        var texts = PluginTestData.Topics(25, seed: 5, classes: 3).Select(r => r.Text).Append(null).Append("").ToArray();
        var schema = Ml.Data.LoadFromEnumerable(PluginTestData.Topics(1, 1)).Schema;
        try
        {
            Ml.Model.Save(Pipeline, schema, path);
            var loaded = new MLContext().Model.Load(path, out var loadedSchema);
            Assert.AreEqual(schema.Count, loadedSchema.Count);
            var data = Ml.Data.LoadFromEnumerable(texts.Select(t => new PluginTestData.LabeledText { Text = t, Label = "food" }));
            CollectionAssert.AreEqual(Pipeline.Transform(data).GetColumn<float[]>("Score").SelectMany(s => s).ToArray(),
                loaded.Transform(data).GetColumn<float[]>("Score").SelectMany(s => s).ToArray());
            CollectionAssert.AreEqual(Pipeline.Transform(data).GetColumn<string>("PredictedLabel").ToArray(),
                loaded.Transform(data).GetColumn<string>("PredictedLabel").ToArray());

            // The classifier alone, across processes: every score bit-identical.
            string alone = ModelFiles.TemporaryPath("classifier-alone");
            try
            {
                Ml.Model.Save(Classifier, null, alone);
                CollectionAssert.AreEqual(ModelFiles.ScoreHere(Classifier, Ml, texts), ModelFiles.ScoreInNewProcess(alone, texts));
            }
            finally
            {
                File.Delete(alone);
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void MissingTruncatedOrForeignModelFilesFailClearly()
    {
        var ml = new MLContext();
        Assert.ThrowsExactly<FileNotFoundException>(() => ml.Model.Load(Path.Combine(Path.GetTempPath(),
            $"no-such-model-{Guid.NewGuid():N}.zip"), out _));

        string path = ModelFiles.TemporaryPath("classifier-files");
        string foreign = Path.GetTempFileName();
        var cleanup = new List<string> { path, foreign };
        try
        {
            Ml.Model.Save(Classifier, null, path);
            foreach (double fraction in new[] { 0.02, 0.5, 0.97 })
            {
                string cut = ModelFiles.Truncated(path, fraction);
                cleanup.Add(cut);
                var e = Assert.Throws<Exception>(() => ml.Model.Load(cut, out _));
                Assert.IsTrue(e is InvalidDataException or FormatException or InvalidOperationException or TargetInvocationException
                    or EndOfStreamException,
                    $"{fraction:P0} of the file: {e.GetType().Name}: {e.Message}");
            }
            foreach (var stream in new[] { "PeerWeights.bin", "PeerTokenizer.bin", "PeerOptions.json" })
            {
                string damaged = ModelFiles.WithTruncatedEntry(path, stream);
                cleanup.Add(damaged);
                var e = Assert.ThrowsExactly<TargetInvocationException>(() => ml.Model.Load(damaged, out _));
                Assert.IsInstanceOfType<InvalidDataException>(e.InnerException, e.ToString());
                StringAssert.Contains(e.InnerException!.Message, stream, e.InnerException.ToString());
            }
            File.WriteAllText(foreign, "this is not a model");
            Assert.Throws<Exception>(() => ml.Model.Load(foreign, out _));
        }
        finally
        {
            foreach (var f in cleanup) File.Delete(f);
        }
    }

    [TestMethod]
    public void ANewerFormatVersionFailsWithAMessageNamingTheVersion()
    {
        string path = ModelFiles.TemporaryPath("classifier-version");
        try
        {
            Ml.Model.Save(Classifier, null, path);
            ModelFiles.SetFormatVersion(path, "PEERTCXF", written: 0x00010005, readable: 0x00010005);
            var e = Assert.ThrowsExactly<TargetInvocationException>(() => new MLContext().Model.Load(path, out _));
            StringAssert.Contains(e.InnerException?.Message ?? "", "0x00010005");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void PredictionEngineAndConcurrentUseGiveTheSameResults()
    {
        var rows = PluginTestData.Topics(48, seed: 6, classes: 3);
        var expected = Pipeline.Transform(Ml.Data.LoadFromEnumerable(rows)).GetColumn<float[]>("Score").ToArray();
        var engine = Ml.Model.CreatePredictionEngine<PluginTestData.LabeledText, Prediction>(Pipeline);
        for (int i = 0; i < 6; i++) CollectionAssert.AreEqual(expected[i], engine.Predict(rows[i]).Score);

        // PredictionEnginePool style: one transformer, an engine per thread, all at once.
        var results = new float[rows.Count][];
        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, worker =>
        {
            var own = Ml.Model.CreatePredictionEngine<PluginTestData.LabeledText, Prediction>(Pipeline);
            for (int i = worker; i < rows.Count; i += 4) results[i] = own.Predict(rows[i]).Score!;
        });
        for (int i = 0; i < rows.Count; i++) CollectionAssert.AreEqual(expected[i], results[i], $"row {i}");
        // And a shared transformer scoring whole data views from several threads.
        var views = Enumerable.Range(0, 4).AsParallel()
            .Select(_ => Pipeline.Transform(Ml.Data.LoadFromEnumerable(rows)).GetColumn<float[]>("Score").ToArray()).ToArray();
        foreach (var view in views) for (int i = 0; i < rows.Count; i++) CollectionAssert.AreEqual(expected[i], view[i]);
    }

    [TestMethod]
    public void CancellationStopsTrainingPromptly()
    {
        var ml = new MLContext(seed: 1);
        var options = PluginTestData.TinyClassifier();
        options.Epochs = 10_000;
        options.EarlyStoppingPatience = 0;
        var train = ml.Transforms.Conversion.MapValueToKey("Label").Fit(ml.Data.LoadFromEnumerable(PluginTestData.Topics(200, 1)))
            .Transform(ml.Data.LoadFromEnumerable(PluginTestData.Topics(200, 1)));
        var fit = Task.Run(() => ml.Peer().TextClassification(options).Fit(train));
        Thread.Sleep(3000);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        PluginTestData.CancelExecution(ml);
        var e = Assert.ThrowsExactly<AggregateException>(() => fit.Wait(TimeSpan.FromSeconds(30)));
        Assert.IsInstanceOfType<OperationCanceledException>(e.InnerException);
        Assert.IsTrue(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed.TotalSeconds:F1} s to stop");

        using var source = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        options.CancellationToken = source.Token;
        Assert.ThrowsExactly<OperationCanceledException>(() => new MLContext(1).Peer().TextClassification(options).Fit(train));
    }

    [TestMethod]
    public void InvalidOptionsAreNamedAtConstruction()
    {
        var options = PluginTestData.TinyClassifier();
        options.Experts = 1000;
        var experts = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Ml.Peer().TextClassification(options));
        Assert.AreEqual("Experts", experts.ParamName);
        options = PluginTestData.TinyClassifier();
        options.Device = "tpu";
        var device = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Ml.Peer().TextClassification(options));
        StringAssert.Contains(device.Message, "Device");
        options = PluginTestData.TinyClassifier();
        options.Device = "cuda";
        // No GPU here (and none supported by the trainers yet): either way a clear refusal, never a silent CPU run.
        var cuda = Assert.Throws<Exception>(() => Ml.Peer().TextClassification(options));
        Assert.IsTrue(cuda is ArgumentOutOfRangeException or NotSupportedException, cuda.ToString());
        StringAssert.Contains(cuda.Message, "cuda");
    }

    private sealed class Prediction
    {
        public float[]? Score { get; set; }
        public string? PredictedLabel { get; set; }
    }

    private sealed class BodyRow
    {
        public string Body { get; set; } = "x";
        public string Label { get; set; } = "a";
    }

    private sealed class NumericTextRow
    {
        public float Text { get; set; } = 1;
        public string Label { get; set; } = "a";
    }
}
