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
            .Select(r => new TextExample { Text = r.Text, Label = r.Label }).ToList();
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
            Assert.AreEqual(ClassifierSuite.Trainers.Count, ((JsonArray)json["results"]!).Count);
            results.AddRange(perSet);
        }
        var table = ClassifierSuite.Table(results).Split('\n');
        Assert.AreEqual(2 + sets.Length * ClassifierSuite.Trainers.Count, table.Length, "a header, a rule and a row per set and trainer");
        Assert.IsTrue(table.All(line => line.Length == table[0].Length), "every line of the table has the header's width");
        StringAssert.Contains(table[0], "log-loss");
    }
}
