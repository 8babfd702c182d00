using System.Text.Json.Nodes;
using ClassifierBenchmarks;
using Microsoft.ML.Peer.Tests.MLNet;

namespace Microsoft.ML.Peer.Tests.Examples;

/// <summary>
/// The classifier suite's quick form on sets made here (the real sets come from package registries, which CI does not
/// reach): every trainer runs on each and the table and JSON are well formed. No accuracy is asserted.
/// </summary>
[TestClass]
public sealed class ClassifierSuiteTests
{
    private static TextSet Synthetic(string name, int classes, int seed)
    {
        List<TextExample> Rows(int count, int s) => PluginTestData.Topics(count, s, classes)
            .Select((r, i) => new TextExample { Text = r.Text ?? "", Label = r.Label, Group = $"{s}/{i / 3}" }).ToList();
        return new TextSet(name, "PluginTestData.Topics", $"{classes} topics", "separate seeds", Rows(240, seed), Rows(60, seed + 1));
    }

    [TestMethod]
    public void EveryTrainerRunsOnEverySetAndTheTableIsWellFormed()
    {
        var sets = new[] { Synthetic("two-topics", 2, 1), Synthetic("three-topics", 3, 5).Slice(150, 40) };
        Assert.AreEqual(150, sets[1].Train.Count);
        Assert.AreEqual(40, sets[1].Test.Count);
        var results = new List<TrainerResult>();
        foreach (var set in sets)
        {
            var perSet = ClassifierSuite.Run(set);
            CollectionAssert.AreEqual(ClassifierSuite.Trainers.Select(t => t.Name).ToArray(), perSet.Select(r => r.Trainer).ToArray());
            foreach (var r in perSet)
            {
                Assert.IsTrue(r.MicroAccuracy is >= 0 and <= 1 && r.MacroAccuracy is >= 0 and <= 1, $"{set.Name} {r.Trainer}: accuracies");
                Assert.IsTrue(double.IsFinite(r.LogLoss) && r.LogLoss >= 0, $"{set.Name} {r.Trainer}: log-loss {r.LogLoss}");
                Assert.IsTrue(r.FitTime > TimeSpan.Zero, $"{set.Name} {r.Trainer}: fit time");
            }
            var json = ClassifierSuite.Json(set, perSet, quick: true);
            Assert.AreEqual(set.Name, (string?)json["set"]);
            Assert.AreEqual(1, (int?)json["seed"]);
            Assert.AreEqual(ClassifierSuite.Trainers.Count, ((JsonArray)json["results"]!).Count);
            var differences = ClassifierSuite.PairedDifferences(set, perSet);
            CollectionAssert.AreEqual(ClassifierSuite.Trainers.Skip(1).Select(t => t.Name).ToArray(), differences.Select(d => d.Other).ToArray());
            foreach (var d in differences)
            {
                var (mine, other) = (perSet[0], perSet.Single(r => r.Trainer == d.Other));
                Assert.AreEqual(mine.LogLoss - other.LogLoss, d.LogLoss, 1e-9, $"{set.Name} {d.Other}: the difference of the two log-losses");
                Assert.AreEqual(mine.MicroAccuracy - other.MicroAccuracy, d.MicroAccuracy, 1e-9, $"{set.Name} {d.Other}: of the accuracies");
                Assert.IsTrue(d.LogLossLow <= d.LogLossHigh && d.MicroAccuracyLow <= d.MicroAccuracyHigh, $"{set.Name} {d.Other}: intervals");
                Assert.AreEqual(set.Test.Select(r => r.Group).Distinct().Count(), d.Documents);
            }
            Assert.AreEqual(differences.Count, ((JsonArray)json["paired_differences"]!).Count);
            results.AddRange(perSet);
        }
        var table = ClassifierSuite.Table(results).Split('\n');
        Assert.AreEqual(2 + sets.Length * ClassifierSuite.Trainers.Count, table.Length, "a header, a rule and a row per set and trainer");
        Assert.IsTrue(table.All(line => line.Length == table[0].Length), "every line of the table has the header's width");
        StringAssert.Contains(table[0], "log-loss");
    }

    [TestMethod]
    public void TrainingRowsAreSlicedAndANonPositiveCountIsRefusedByName()
    {
        var set = Synthetic("two-topics", 2, 1);
        var sliced = set.SliceTraining(50);
        Assert.AreEqual(50, sliced.Train.Count);
        Assert.AreSame(set.Test, sliced.Test, "the test part is kept as it is, unread");
        var refused = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => set.SliceTraining(0));
        StringAssert.Contains(refused.Message, "--train-rows expects at least 1 row; got 0");
    }

    [TestMethod]
    public void MoreConfigurationsOfOursAreTestedAfterTheTrainersAsked()
    {
        var set = Synthetic("two-topics", 2, 1).Slice(120, 40);
        var results = ClassifierSuite.Run(set, only: new[] { "lbfgs" }, configurations: new[] { PeerConfiguration.Parse("BatchSize=8") });
        CollectionAssert.AreEqual(new[] { "FeaturizeText + LbfgsMaximumEntropy", "PEER (BatchSize=8)" }, results.Select(r => r.Trainer).ToArray());
        foreach (var r in results)
            Assert.IsTrue(r.MicroAccuracy is >= 0 and <= 1 && double.IsFinite(r.LogLoss) && r.FitTime > TimeSpan.Zero, r.ToString());
    }

    /// <summary>A test part that fails when read: cross-validation must choose on the training part only.</summary>
    private sealed class Unreadable : IReadOnlyList<TextExample>
    {
        public TextExample this[int index] => throw new InvalidOperationException("the test part was read");

        public int Count => 60;

        public IEnumerator<TextExample> GetEnumerator() => throw new InvalidOperationException("the test part was read");

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }

    [TestMethod]
    public void CrossValidationComparesConfigurationsWithoutReadingTheTestPart()
    {
        var set = Synthetic("three-topics", 3, 5) with { Test = new Unreadable() };
        var configurations = new[] { PeerConfiguration.Parse("defaults"), PeerConfiguration.Parse("Epochs=2, LabelSmoothing=0.1") };
        Assert.AreEqual(2, configurations[1].Options().Epochs);
        Assert.AreEqual(0.1, configurations[1].Options().LabelSmoothing);
        var results = ClassifierSuite.CrossValidate(set, configurations, folds: 2, stock: new[] { "lbfgs" });
        CollectionAssert.AreEqual(new[] { "PEER (defaults)", "PEER (Epochs=2, LabelSmoothing=0.1)", "FeaturizeText + LbfgsMaximumEntropy" },
            results.Select(r => r.Trainer).ToArray());
        foreach (var r in results)
        {
            Assert.IsTrue(r.MicroAccuracy is >= 0 and <= 1 && double.IsFinite(r.LogLoss) && r.FitTime > TimeSpan.Zero, r.ToString());
            Assert.AreEqual(2, r.FoldLogLoss!.Count, $"{r.Trainer}: a log-loss per fold");
            Assert.AreEqual(r.LogLoss, r.FoldLogLoss.Average(), 1e-9, $"{r.Trainer}: the folds' mean is the reported log-loss");
        }
        var differences = ClassifierSuite.FoldDifferences(results);
        CollectionAssert.AreEqual(results.Skip(1).Select(r => r.Trainer).ToArray(), differences.Select(d => d.Other).ToArray());
        foreach (var d in differences)
        {
            var other = results.Single(r => r.Trainer == d.Other);
            Assert.AreEqual(results[0].LogLoss - other.LogLoss, d.Mean, 1e-9, $"{d.Other}: ours minus theirs");
            Assert.AreEqual(results[0].FoldLogLoss!.Zip(other.FoldLogLoss!).Count(p => p.First < p.Second), d.OursLower);
            StringAssert.Contains(ClassifierSuite.Describe(d), $"of 2 folds");
        }
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ClassifierSuite.CrossValidate(set, configurations, folds: 1)).Message,
            "--cv expects at least 2 folds; got 1", "fewer than 2 folds is refused by the option's name, before anything is fitted");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => PeerConfiguration.Parse("Epoch=2")).Message, "'Epoch'");
        CollectionAssert.AreEqual(new[] { "Sdcaa" }, ClassifierSuite.UnknownTrainers(new[] { "sdca", "Sdcaa", "lightgbm" }),
            "a --trainers part that names no trainer is refused by name");
    }

    [TestMethod]
    public void TheFewLabelExperimentFitsEachTrainerAtEachFraction()
    {
        var set = Synthetic("three-topics", 3, 5);
        var results = ClassifierSuite.FewLabels(set, new[] { 0.1, 0.5 }, PluginTestData.TinyLanguageModel());
        Assert.AreEqual(1 + 2 * 3, results.Count, "the pre-training, then three trainers at each fraction");
        Assert.IsTrue(double.IsNaN(results[0].MicroAccuracy) && results[0].FitTime > TimeSpan.Zero, "the pre-training row has a time only");
        StringAssert.Contains(results[1].Trainer, "10 % labels (");
        StringAssert.Contains(results[4].Trainer, "50 % labels (");
        foreach (var r in results.Skip(1))
            Assert.IsTrue(r.MicroAccuracy is >= 0 and <= 1 && double.IsFinite(r.LogLoss), r.ToString());
        var json = ClassifierSuite.Json(set, results, quick: true);
        Assert.IsNull(((JsonArray)json["results"]!)[0]!["micro_accuracy"]);
        StringAssert.Contains(ClassifierSuite.Table(results).Split('\n')[2], "| -");
    }
}
