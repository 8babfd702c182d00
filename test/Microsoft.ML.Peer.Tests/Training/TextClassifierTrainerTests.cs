using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Tests.Models;
using Microsoft.ML.Peer.Training;

namespace Microsoft.ML.Peer.Tests.Training;

[TestClass]
public sealed class TextClassifierTrainerTests
{
    [TestMethod]
    [DataRow(FeedForwardKind.Dense)]
    [DataRow(FeedForwardKind.Peer)]
    [DataRow(FeedForwardKind.Peer, 0)]
    public void LearnsWhetherAMarkerTokenAppears(FeedForwardKind kind, int layers = 1)
    {
        var (train, trainLabels) = TinyTextClassification.Data(1200, seed: 1);
        var (test, testLabels) = TinyTextClassification.Data(400, seed: 2);
        var options = TinyTextClassification.Options(kind);
        options.Layers = layers;
        using var trainer = new TextClassifierTrainingLoop(options, TinyTextClassification.Training(epochs: 6));
        var before = trainer.Evaluate(test, testLabels);
        var result = trainer.Train(train, trainLabels, test, testLabels);
        Assert.AreEqual(6, result.Epochs.Count);
        Assert.AreEqual(6 * 38, result.Steps, "1200 texts in batches of 32 give 38 steps an epoch");
        var last = result.Epochs[^1];
        Assert.IsTrue(last.ValidationAccuracy >= 0.95, $"{kind}, {layers} layers: validation accuracy {before.Accuracy:P1} → {last.ValidationAccuracy:P1}, loss {last.ValidationLoss:F3}");
        Assert.AreEqual(last.ValidationAccuracy!.Value, trainer.Evaluate(test, testLabels).Accuracy, 1e-12,
            "the report is the model's accuracy");
        Assert.IsTrue(last.TrainLoss < result.Epochs[0].TrainLoss);
        var probabilities = trainer.PredictProbabilities(test);
        Assert.AreEqual(test.Count, probabilities.Length);
        foreach (var p in probabilities) Assert.AreEqual(1.0, p.Sum(), 1e-5);
    }

    [TestMethod]
    public void TheSameSeedGivesTheSameModel()
    {
        var (train, labels) = TinyTextClassification.Data(256, seed: 3);
        (double[] Losses, float[][] Probabilities) Run(int seed)
        {
            var options = TinyTextClassification.Training(epochs: 2);
            options.Seed = seed;
            using var trainer = new TextClassifierTrainingLoop(TinyTextClassification.Options(FeedForwardKind.Peer), options);
            var result = trainer.Train(train, labels);
            return (result.Epochs.Select(e => e.TrainLoss).ToArray(), trainer.PredictProbabilities(train.Take(20).ToList()));
        }
        var first = Run(7);
        var second = Run(7);
        var other = Run(8);
        CollectionAssert.AreEqual(first.Losses, second.Losses);
        for (int i = 0; i < first.Probabilities.Length; i++)
            CollectionAssert.AreEqual(first.Probabilities[i], second.Probabilities[i], $"text {i}");
        CollectionAssert.AreNotEqual(first.Losses, other.Losses, "another seed initialises and orders differently");
    }

    [TestMethod]
    public void PredictionsDoNotDependOnTheOtherTextsOfABatch()
    {
        var (texts, _) = TinyTextClassification.Data(50, seed: 4);
        using var trainer =
            new TextClassifierTrainingLoop(TinyTextClassification.Options(FeedForwardKind.Peer), TinyTextClassification.Training(1));
        var together = trainer.PredictProbabilities(texts);
        for (int i = 0; i < texts.Count; i += 7)
        {
            var alone = trainer.PredictProbabilities(new[] { texts[i] })[0];
            for (int c = 0; c < 2; c++) Assert.AreEqual(alone[c], together[i][c], 1e-5, $"text {i}, class {c}");
        }
    }

    [TestMethod]
    public void CancellationStopsTrainingAtTheNextStep()
    {
        var (train, labels) = TinyTextClassification.Data(640, seed: 5);
        var options = TinyTextClassification.Training(epochs: 50);
        options.LogEvery = 1;
        using var trainer = new TextClassifierTrainingLoop(TinyTextClassification.Options(FeedForwardKind.Peer), options);
        using var cancellation = new CancellationTokenSource();
        Assert.ThrowsExactly<OperationCanceledException>(() =>
            trainer.Train(train, labels, progress: p => { if (p.Step == 3) cancellation.Cancel(); }, cancellation: cancellation.Token));
        Assert.AreEqual(3, trainer.Step, "no step starts after cancellation");
        Assert.ThrowsExactly<OperationCanceledException>(() => trainer.Train(train, labels, cancellation: cancellation.Token));
        Assert.AreEqual(3, trainer.Step);
    }

    [TestMethod]
    public void ATimeBudgetShortensTheSchedule()
    {
        var (train, labels) = TinyTextClassification.Data(640, seed: 6);
        var options = TinyTextClassification.Training(epochs: 20);
        options.WarmupSteps = 4;
        // A budget already spent by warm-up leaves one step after it, however fast this machine is.
        options.TimeBudget = TimeSpan.FromTicks(1);
        using var trainer = new TextClassifierTrainingLoop(TinyTextClassification.Options(FeedForwardKind.Dense), options);
        var result = trainer.Train(train, labels);
        Assert.AreEqual(5, result.Steps);
        Assert.AreEqual(1, result.Epochs.Count, "the one partial epoch is reported");
    }

    [TestMethod]
    public void EpochBatchesCoverEveryTextOnceAndGroupSimilarLengths()
    {
        var random = new Random(9);
        var lengths = Enumerable.Range(0, 1000).Select(_ => random.Next(1, 200)).ToArray();
        var batches = TextClassifierTrainingLoop.PlanEpoch(lengths, 10, new Random(1));
        CollectionAssert.AreEquivalent(Enumerable.Range(0, 1000).ToArray(), batches.SelectMany(b => b).ToArray());
        long padded = batches.Sum(b => (long)b.Length * b.Max(i => lengths[i]));
        Assert.IsTrue(padded < 1.2 * lengths.Sum(), $"padded tokens {padded} vs real {lengths.Sum()}");
        var again = TextClassifierTrainingLoop.PlanEpoch(lengths, 10, new Random(1));
        Assert.IsTrue(batches.Zip(again).All(p => p.First.SequenceEqual(p.Second)), "the plan depends only on the lengths and the seed");
    }

    [TestMethod]
    public void MismatchedInputsAreRejected()
    {
        using var trainer =
            new TextClassifierTrainingLoop(TinyTextClassification.Options(FeedForwardKind.Dense), TinyTextClassification.Training(1));
        var texts = new[] { new[] { 1, 2 }, new[] { 4 } };
        Assert.AreEqual("labels", Assert.ThrowsExactly<ArgumentException>(() => trainer.Train(texts, new[] { 0 })).ParamName);
        Assert.AreEqual("labels", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => trainer.Train(texts, new[] { 0, 2 })).ParamName);
        Assert.AreEqual("validationLabels",
            Assert.ThrowsExactly<ArgumentException>(() => trainer.Train(texts, new[] { 0, 1 }, texts, null)).ParamName);
    }

    [TestMethod]
    public void FewTextsTrainInSmallerBatchesSoThatAnEpochStillTakesItsSteps()
    {
        var rule = new ClassifierTrainingOptions { BatchSize = 32, MinimumStepsPerEpoch = 64 };
        Assert.AreEqual(32, rule.BatchSizeFor(49_000), "plenty of rows: the batch asked for");
        Assert.AreEqual(32, rule.BatchSizeFor(64 * 32));
        Assert.AreEqual(13, rule.BatchSizeFor(848), "848 rows: 13 a batch, 65 steps an epoch");
        Assert.AreEqual(ClassifierTrainingOptions.SmallestBatch, rule.BatchSizeFor(300), "never below the smallest batch");
        Assert.AreEqual(ClassifierTrainingOptions.SmallestBatch, rule.BatchSizeFor(1));
        Assert.AreEqual(4, new ClassifierTrainingOptions { BatchSize = 4 }.BatchSizeFor(300), "never above the batch asked for");
        Assert.AreEqual(32, new ClassifierTrainingOptions { BatchSize = 32, MinimumStepsPerEpoch = 0 }.BatchSizeFor(300), "0 turns it off");

        var (texts, labels) = TinyTextClassification.Data(300, seed: 1);
        ClassifierTrainingResult Run(int minimumSteps)
        {
            var training = TinyTextClassification.Training(epochs: 1);
            training.MinimumStepsPerEpoch = minimumSteps;
            using var trainer = new TextClassifierTrainingLoop(TinyTextClassification.Options(FeedForwardKind.Dense), training);
            return trainer.Train(texts, labels);
        }
        var shrunk = Run(64);
        var asked = Run(0);
        Assert.AreEqual(8, shrunk.BatchSize);
        Assert.AreEqual(32, asked.BatchSize);
        Assert.IsTrue(shrunk.Steps >= 300 / 8 && asked.Steps <= (300 + 31) / 32 + 2,
            $"an epoch of 300 texts: {shrunk.Steps} steps in batches of 8, {asked.Steps} in batches of 32");
    }

    [TestMethod]
    public void InvalidTrainingOptionsAreRejectedByName()
    {
        void Rejected(Action<ClassifierTrainingOptions> change, string option)
        {
            var options = new ClassifierTrainingOptions();
            change(options);
            var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(
                () => new TextClassifierTrainingLoop(TinyTextClassification.Options(FeedForwardKind.Dense), options));
            Assert.AreEqual(option, e.ParamName);
            StringAssert.Contains(e.Message, option);
        }
        Rejected(o => o.BatchSize = 0, "BatchSize");
        Rejected(o => o.Epochs = 0, "Epochs");
        Rejected(o => o.MinimumStepsPerEpoch = -1, "MinimumStepsPerEpoch");
        Rejected(o => o.LearningRate = double.NaN, "LearningRate");
        Rejected(o => o.WarmupSteps = -1, "WarmupSteps");
        Rejected(o => o.WeightDecay = -0.1, "WeightDecay");
        Rejected(o => o.GradientClipNorm = -1, "GradientClipNorm");
        Rejected(o => o.LogEvery = 0, "LogEvery");
        Rejected(o => o.TimeBudget = TimeSpan.Zero, "TimeBudget");
        Rejected(o => { o.TimeBudget = TimeSpan.FromSeconds(1); o.WarmupSteps = 1; }, "WarmupSteps");
    }
}
