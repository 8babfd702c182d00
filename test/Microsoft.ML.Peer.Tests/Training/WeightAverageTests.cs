using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Tests.Models;
using Microsoft.ML.Peer.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Tests.Training;

[TestClass]
public sealed class WeightAverageTests
{
    [TestMethod]
    public void TheAverageWeighsEachStepAsPolynomialDecayAveragingSays()
    {
        using var layer = nn.Linear(3, 2);
        var weight = layer.weight!;
        using var average = new WeightAverage(layer);
        var values = new[] { 1.0, 5.0, -2.0, 7.0, 0.5 };
        double expected = 0;
        for (int t = 1; t <= values.Length; t++)
        {
            using (no_grad()) weight.fill_(values[t - 1]);
            average.Update();
            double w = (WeightAverage.Eta + 1) / (t + WeightAverage.Eta);
            expected = (1 - w) * expected + w * values[t - 1];
        }
        Assert.AreEqual(values.Length, average.Updates);
        average.Swap();
        Assert.IsTrue(average.ModelHoldsAverage);
        // Written out: steps 1..5 weigh 1, 4, 10, 20 and 35 seventieths (t(t+1)(t+2)/6, the η = 3 polynomial).
        Assert.AreEqual((1 * 1.0 + 4 * 5.0 + 10 * -2.0 + 20 * 7.0 + 35 * 0.5) / 70, expected, 1e-12);
        foreach (var v in weight.data<float>().ToArray()) Assert.AreEqual(expected, v, 1e-5);
        average.Swap();
        Assert.IsFalse(average.ModelHoldsAverage);
        foreach (var v in weight.data<float>().ToArray()) Assert.AreEqual(0.5f, v, "the live weights come back exactly");
    }

    [TestMethod]
    public void ParametersLeftOutOfTheAverageKeepTheirLiveValues()
    {
        using var layer = nn.Linear(3, 2);
        using var average = new WeightAverage(layer, averaged: name => name != "bias");
        for (int t = 1; t <= 3; t++)
        {
            using (no_grad()) { layer.weight!.fill_(t); layer.bias!.fill_(10 * t); }
            average.Update();
        }
        average.Swap();
        Assert.AreNotEqual(3f, layer.weight!.data<float>()[0], "the weight holds the average of 1, 2, 3");
        Assert.AreEqual(30f, layer.bias!.data<float>()[0], "the bias was not averaged: its last value");
        average.Swap();
        Assert.AreEqual(3f, layer.weight!.data<float>()[0], "swapped back");
    }

    [TestMethod]
    public void SwappingBeforeAnyUpdateOrUpdatingWhileSwappedIsRefused()
    {
        using var layer = nn.Linear(2, 2);
        using var average = new WeightAverage(layer);
        Assert.ThrowsExactly<InvalidOperationException>(average.Swap);
        average.Update();
        average.Swap();
        Assert.ThrowsExactly<InvalidOperationException>(average.Update);
    }

    [TestMethod]
    public void AveragingLeavesTheTrainingRunAsItWasAndKeepsTheAverageItJudged()
    {
        var (train, labels) = TinyTextClassification.Data(300, seed: 1);
        var (validation, validationLabels) = TinyTextClassification.Data(100, seed: 2);
        ClassifierTrainingResult Run(bool averaged, out float[][] logits)
        {
            var training = TinyTextClassification.Training(epochs: 3);
            training.EarlyStoppingPatience = 0;
            training.FitScoreTemperature = false;
            training.AverageWeights = averaged;
            using var trainer = new TextClassifierTrainingLoop(TinyTextClassification.Options(FeedForwardKind.Peer), training);
            var result = trainer.Train(train, labels, validation, validationLabels);
            Assert.AreEqual(result.Epochs[^1].ValidationLoss!.Value, trainer.Evaluate(validation, validationLabels).Loss, 1e-6,
                "the model returned is the one the last epoch was judged by");
            logits = trainer.PredictLogits(validation);
            return result;
        }

        var plain = Run(averaged: false, out var plainLogits);
        var averaged = Run(averaged: true, out var averagedLogits);
        // Scoring the average between epochs swaps the live weights back exactly: the steps see the same weights either way.
        CollectionAssert.AreEqual(plain.Epochs.Select(e => e.TrainLoss).ToList(), averaged.Epochs.Select(e => e.TrainLoss).ToList());
        Assert.IsTrue(plainLogits.Zip(averagedLogits).Any(p => Math.Abs(p.First[0] - p.Second[0]) > 1e-4),
            "the averaged model scores differently from the last step's");
    }
}
