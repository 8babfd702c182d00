using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Data;
using Microsoft.ML.Peer.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Tests.Training;

[TestClass]
public sealed class TelemetryAndBaselineTests
{
    [TestMethod]
    public void ExpertUsageFollowsThePapersDefinition()
    {
        using var usage = new ExpertUsageAccumulator(4) { Enabled = true };
        // z' = [0.5+0.25, 0.5, 0.75, 0]: expert 3 is never retrieved.
        // Four tokens whose inputs lie on one line (rank 1) and whose queries spread evenly over two axes (rank 2).
        var inputs = tensor(new float[] { 1, 2, 2, 4, -1, -2, 0, 0 }, new long[] { 4, 2 });
        var queries = tensor(new float[] { 1, 0, -1, 0, 0, 1, 0, -1 }, new long[] { 4, 2 });
        usage.Add(inputs, queries, tensor(new long[] { 0, 1, 2, 0 }), tensor(new float[] { 0.5f, 0.5f, 0.75f, 0.25f }));
        var result = usage.Compute();
        Assert.AreEqual(0.75, result.UsedFraction, 1e-12);
        double[] z = { 0.75 / 2, 0.5 / 2, 0.75 / 2 };
        Assert.AreEqual(Math.Log(4) + z.Sum(v => v * Math.Log(v)), result.Unevenness, 1e-9);
        Assert.AreEqual(4L, result.Retrievals);
        Assert.AreEqual(0.375, result.TopPercentShare, 1e-12);          // the top 1% of 4 experts is one: z = 0.375
        Assert.AreEqual(1.0, result.InputEffectiveRank, 1e-9);
        Assert.AreEqual(2.0, result.QueryEffectiveRank, 1e-9);

        // Unequal variances: eigenvalues 3:1 give exp(H(0.75, 0.25)).
        using var skewed = new ExpertUsageAccumulator(4) { Enabled = true };
        var spread = tensor(new float[] { 3, 0, -3, 0, 0, 1.7320508f, 0, -1.7320508f }, new long[] { 4, 2 });
        skewed.Add(spread, spread, tensor(new long[] { 0, 1, 2, 3 }), tensor(new float[] { 1, 1, 1, 1 }));
        Assert.AreEqual(Math.Exp(-(0.75 * Math.Log(0.75) + 0.25 * Math.Log(0.25))), skewed.Compute().InputEffectiveRank, 1e-6);

        // The rank is of the covariance, so a mean far from the origin changes nothing: the same points shifted by (10, −5, 3)
        // still lie on one line, and the spread ones still give 3:1. (An uncentred second moment would be dominated by the mean.)
        using var shifted = new ExpertUsageAccumulator(4) { Enabled = true };
        var offset = tensor(new float[] { 10, -5, 3 });
        var line = tensor(new float[] { 1, 2, 0, 2, 4, 0, -1, -2, 0, 0, 0, 0 }, new long[] { 4, 3 }) + offset;
        var plane = tensor(new float[] { 3, 0, 0, -3, 0, 0, 0, 1.7320508f, 0, 0, -1.7320508f, 0 }, new long[] { 4, 3 }) + offset;
        shifted.Add(line, plane, tensor(new long[] { 0, 1, 2, 3 }), tensor(new float[] { 1, 1, 1, 1 }));
        var centred = shifted.Compute();
        Assert.AreEqual(1.0, centred.InputEffectiveRank, 1e-4);
        Assert.AreEqual(Math.Exp(-(0.75 * Math.Log(0.75) + 0.25 * Math.Log(0.25))), centred.QueryEffectiveRank, 1e-4);
    }

    [TestMethod]
    public void DisabledAccumulatorRecordsNothing()
    {
        using var usage = new ExpertUsageAccumulator(4);
        usage.Add(ones(1, 2), ones(1, 2), tensor(new long[] { 0 }), tensor(new float[] { 1 }));
        Assert.AreEqual(0L, usage.Compute().Retrievals);
    }

    [TestMethod]
    public void UnigramPerplexityMatchesHandComputation()
    {
        // counts (0:2, 1:1, 2:0) with add-one over V=3: p = 3/6, 2/6, 1/6.
        double ppl = UnigramBaseline.Perplexity(new[] { 0, 0, 1 }, new[] { 0, 2 }, 3);
        Assert.AreEqual(Math.Exp(-(Math.Log(0.5) + Math.Log(1.0 / 6)) / 2), ppl, 1e-12);
    }

    [TestMethod]
    public void ScheduleWarmsUpThenDecaysToTheFloor()
    {
        Assert.AreEqual(0.1, LearningRateSchedule.At(0, 1.0, 10, 100, 0.1), 1e-12);
        Assert.AreEqual(1.0, LearningRateSchedule.At(9, 1.0, 10, 100, 0.1), 1e-12);
        Assert.AreEqual(0.55, LearningRateSchedule.At(55, 1.0, 10, 100, 0.1), 1e-12);
        Assert.AreEqual(0.1, LearningRateSchedule.At(100, 1.0, 10, 100, 0.1), 1e-12);
    }
}
