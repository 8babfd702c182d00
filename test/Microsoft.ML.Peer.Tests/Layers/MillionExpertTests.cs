using Microsoft.ML.Peer.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Tests.Layers;

[TestClass]
public sealed class MillionExpertTests
{
    /// <summary>
    /// N = 1024² experts: forward + backward must cost memory that follows active parameters.
    /// A single N-sized activation (e.g. scores of every token against every key, [T, N] or more)
    /// would be ≥ 1 GiB here; the peak resident memory growth must stay far below that.
    /// </summary>
    [TestMethod]
    [Timeout(300_000, CooperativeCancellation = true)]
    public void MillionExpertLayerTrainsStepWithoutNSizedActivations()
    {
        manual_seed(7);
        const int d = 64, T = 256, N = 1024 * 1024;
        using var layer =
            new PeerLayer(d, new PeerOptions { Experts = N, Heads = 8, TopK = 16, KeyDimension = 128, SparseGradients = true });
        layer.train();
        using var x = randn(T, d, requires_grad: true);
        using var weights = randn(T, d);

        // Warm up once so the allocator's steady state is not counted, then measure a second step.
        using (var warm = layer.forward(x)) (warm * weights).sum().backward();
        foreach (var p in layer.parameters()) p.grad = null;
        x.grad = null;

        long before = PeakResidentMemory.ResetAndRead();
        using (var y = layer.forward(x))
        {
            (y * weights).sum().backward();
        }
        long growth = PeakResidentMemory.Peak() - before;

        Console.WriteLine($"peak RSS growth during a 1M-expert forward+backward of {T} tokens: {growth / (1 << 20)} MiB");
        long smallestNSizedActivation = (long)T * N * sizeof(float);      // 1 GiB
        Assert.IsTrue(growth < smallestNSizedActivation / 8,
            $"peak resident memory grew by {growth / (1 << 20)} MiB during one step; an N-sized activation is {smallestNSizedActivation / (1 << 20)} MiB");
        // Positive control: the same measurement does see one N-sized activation.
        long controlBefore = PeakResidentMemory.ResetAndRead();
        using (var scores = ones(T, N)) { }
        long controlGrowth = PeakResidentMemory.Peak() - controlBefore;
        Assert.IsTrue(controlGrowth > smallestNSizedActivation / 2,
            $"the memory probe missed a {smallestNSizedActivation / (1 << 20)} MiB allocation (saw {controlGrowth / (1 << 20)} MiB)");

        Assert.IsTrue(layer.DownWeights.grad!.is_sparse && layer.UpWeights.grad!.is_sparse,
            "expert gradients must be sparse (no N×d gradient)");
        var (_, retrieved) = layer.Router.forward(x.detach());
        var (rows, _) = Microsoft.ML.Peer.Training.SparseRowAdamW.CoalesceRows(layer.DownWeights.grad!);
        var expected = unique(retrieved.reshape(-1), sorted: true).Item1;
        Assert.AreEqual(expected.shape[0], rows.shape[0], "one gradient row per retrieved expert");
        Assert.IsTrue((expected == rows).all().item<bool>(), "gradient rows must be exactly the retrieved experts");
        Assert.IsTrue(x.grad is not null && x.grad.abs().sum().item<float>() > 0, "the input gets a gradient");
    }
}
