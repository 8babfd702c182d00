using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Tests.Models;
using Microsoft.ML.Peer.Training;

namespace Microsoft.ML.Peer.Tests.Training;

[TestClass]
public sealed class EarlyStoppingAndCalibrationTests
{
    [TestMethod]
    public void StopsWhenTheValidationLossStopsFallingAndKeepsTheBestEpoch()
    {
        var (train, labels) = TinyTextClassification.Data(600, seed: 1);
        // Validation labels a coin decides: the more confident the model gets on the marker, the worse their loss.
        var (validation, _) = TinyTextClassification.Data(200, seed: 2);
        var random = new Random(3);
        var coin = validation.Select(_ => random.Next(2)).ToList();
        var training = TinyTextClassification.Training(epochs: 10);
        training.EarlyStoppingPatience = 1;
        training.FitScoreTemperature = false;
        using var trainer = new TextClassifierTrainingLoop(TinyTextClassification.Options(FeedForwardKind.Peer), training);
        var result = trainer.Train(train, labels, validation, coin);

        var losses = result.Epochs.Select(e => e.ValidationLoss!.Value).ToList();
        Assert.IsTrue(result.Epochs.Count < 10, $"trained all 10 epochs; validation losses {string.Join(", ", losses)}");
        int best = losses.IndexOf(losses.Min()) + 1;
        Assert.AreEqual(best, result.KeptEpoch);
        Assert.AreEqual(result.Epochs.Count, best + 1, "patience 1 stops one epoch after the best");
        Assert.AreEqual(losses.Min(), trainer.Evaluate(validation, coin).Loss, 1e-5, "the best epoch's weights are back");
        Assert.IsNull(result.ScoreTemperature);
    }

    [TestMethod]
    public void PatienceZeroTrainsEveryEpochAndKeepsTheLastWeights()
    {
        var (train, labels) = TinyTextClassification.Data(300, seed: 1);
        var (validation, validationLabels) = TinyTextClassification.Data(100, seed: 2);
        var training = TinyTextClassification.Training(epochs: 3);
        training.EarlyStoppingPatience = 0;
        training.FitScoreTemperature = false;
        using var trainer = new TextClassifierTrainingLoop(TinyTextClassification.Options(FeedForwardKind.Peer), training);
        var result = trainer.Train(train, labels, validation, validationLabels);
        Assert.AreEqual(3, result.Epochs.Count);
        Assert.AreEqual(3, result.KeptEpoch);
        Assert.AreEqual(result.Epochs[^1].ValidationLoss!.Value, trainer.Evaluate(validation, validationLabels).Loss, 1e-6);
    }

    [TestMethod]
    public void TheFittedTemperatureChangesTheScoresButNoPrediction()
    {
        var (train, labels) = TinyTextClassification.Data(600, seed: 1);
        var (validation, _) = TinyTextClassification.Data(200, seed: 2);
        var random = new Random(4);
        var noisy = validation.Select(t => random.NextDouble() < 0.3 ? 1 - (t.Contains(TinyTextClassification.Marker) ? 1 : 0)
            : (t.Contains(TinyTextClassification.Marker) ? 1 : 0)).ToList();
        var training = TinyTextClassification.Training(epochs: 4);
        training.EarlyStoppingPatience = 0;
        using var trainer = new TextClassifierTrainingLoop(TinyTextClassification.Options(FeedForwardKind.Peer), training);
        var result = trainer.Train(train, labels, validation, noisy);

        // 30% of the validation labels are flipped: the model, right on the marker, is overconfident for them.
        double temperature = result.ScoreTemperature!.Value;
        Assert.IsTrue(temperature > 1.2, $"temperature {temperature}");
        Assert.AreEqual(temperature, trainer.Model.Options.ScoreTemperature, 1e-12, "the model keeps it (and saves it with its options)");
        var logits = trainer.PredictLogits(validation);
        var probabilities = trainer.PredictProbabilities(validation);
        for (int i = 0; i < logits.Length; i++)
        {
            var scaled = logits[i].Select(z => Math.Exp(z / temperature)).ToArray();
            for (int c = 0; c < 2; c++) Assert.AreEqual(scaled[c] / scaled.Sum(), probabilities[i][c], 1e-5);
            Assert.AreEqual(logits[i][0] >= logits[i][1], probabilities[i][0] >= probabilities[i][1]);
        }
        Assert.IsTrue(trainer.Evaluate(validation, noisy).Loss
                      < ScoreTemperatureFit.CrossEntropy(logits, noisy, temperature: 1) - 0.01, "calibration lowered the loss");
    }

    [TestMethod]
    public void TemperatureFitRecoversTheTemperatureLabelsWereDrawnAt()
    {
        var random = new Random(7);
        var logits = new List<float[]>();
        var labels = new List<int>();
        for (int i = 0; i < 20_000; i++)
        {
            var z = Enumerable.Range(0, 5).Select(_ => (float)(3 * random.NextDouble() - 1.5) * 4).ToArray();
            var p = z.Select(v => Math.Exp(v / 2.5)).ToArray();
            double u = random.NextDouble() * p.Sum();
            int label = 0;
            while (label < 4 && (u -= p[label]) > 0) label++;
            logits.Add(z);
            labels.Add(label);
        }
        double fitted = ScoreTemperatureFit.Fit(logits, labels);
        Assert.AreEqual(2.5, fitted, 0.1);
        Assert.IsTrue(ScoreTemperatureFit.CrossEntropy(logits, labels, fitted) <= ScoreTemperatureFit.CrossEntropy(logits, labels, 2.5) + 1e-9);
        Assert.ThrowsExactly<ArgumentException>(() => ScoreTemperatureFit.Fit(logits, labels.Take(3).ToList()));
    }

    [TestMethod]
    public void AValidationSetWithoutErrorsDoesNotSharpenTheScoresToCertainty()
    {
        // 30 texts, every one right by a margin of 4: the unsmoothed optimum is the sharpest temperature allowed.
        var logits = Enumerable.Range(0, 30).Select(i => i % 2 == 0 ? new[] { 4f, 0f } : new[] { 0f, 4f }).ToList();
        var labels = Enumerable.Range(0, 30).Select(i => i % 2).ToList();
        double fitted = ScoreTemperatureFit.Fit(logits, labels);
        // Platt's target for 30 texts, 1 − 1/32, is reached at margin / T = ln 31.
        Assert.AreEqual(4 / Math.Log(31), fitted, 1e-3);
    }

    [TestMethod]
    public void HoldOutTakesTheFractionOfEachClassAndFollowsTheSeed()
    {
        var labels = Enumerable.Repeat(0, 50).Concat(Enumerable.Repeat(1, 10)).Append(2).ToList();
        var heldOut = PeerTextClassificationTrainer.HoldOut(labels, null, 0.1, seed: 1);
        Assert.AreEqual(5, heldOut.Count(i => labels[i] == 0));
        Assert.AreEqual(1, heldOut.Count(i => labels[i] == 1));
        Assert.AreEqual(0, heldOut.Count(i => labels[i] == 2), "a class of one row keeps it for training");
        CollectionAssert.AreEqual(heldOut, PeerTextClassificationTrainer.HoldOut(labels, null, 0.1, seed: 1));
        CollectionAssert.AreNotEqual(heldOut, PeerTextClassificationTrainer.HoldOut(labels, null, 0.1, seed: 2));
    }

    [TestMethod]
    public void GroupsAreHeldOutWhole()
    {
        // 40 documents of 5 passages each, one label per document.
        var labels = Enumerable.Range(0, 200).Select(i => i / 5 % 2).ToList();
        var groups = Enumerable.Range(0, 200).Select(i => $"doc{i / 5}").ToList();
        var heldOut = PeerTextClassificationTrainer.HoldOut(labels, groups, 0.2, seed: 1);
        foreach (var document in heldOut.Select(i => groups[i]).Distinct())
            Assert.AreEqual(5, heldOut.Count(i => groups[i] == document), $"{document} was split");
        Assert.AreEqual(20, heldOut.Count(i => labels[i] == 0), "20% of each class, in whole documents");
        Assert.AreEqual(20, heldOut.Count(i => labels[i] == 1));
    }

    [TestMethod]
    public void ATemperatureTransfersOnlyWhereItDoesNotMakeTheScoresWorse()
    {
        // Confident and right: sharpening helps; softening hurts here but only ever moves towards uniform, so it may.
        var right = new List<float[]> { new[] { 2f, 0f }, new[] { 0f, 2f }, new[] { 3f, 0f } };
        var labels = new List<int> { 0, 1, 0 };
        Assert.IsTrue(ScoreTemperatureFit.Transfers(right, labels, 0.5));
        Assert.IsTrue(ScoreTemperatureFit.Transfers(right, labels, 4));
        // Confident and wrong: sharpening makes it worse and may not.
        Assert.IsFalse(ScoreTemperatureFit.Transfers(right, new List<int> { 1, 0, 1 }, 0.5));
        // A model at chance: sharpening 20 times turns small margins into confident mistakes.
        var chance = new List<float[]> { new[] { 0.2f, 0f }, new[] { 0.1f, 0f }, new[] { 0f, 0.1f }, new[] { 0f, 0.2f } };
        Assert.IsFalse(ScoreTemperatureFit.Transfers(chance, new List<int> { 1, 0, 0, 1 }, 0.05));
        Assert.IsTrue(ScoreTemperatureFit.Transfers(chance, new List<int> { 1, 0, 0, 1 }, 1), "no temperature always transfers");
    }
}
