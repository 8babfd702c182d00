using Microsoft.ML.Peer.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Tests.Layers;

[TestClass]
public sealed class PeerLayerTests
{
    private static PeerOptions Small(ExpertActivation activation = ExpertActivation.Gelu, ScoreActivation score = ScoreActivation.Softmax,
        bool bn = true, bool sparse = false) => new()
        {
            Experts = 16 * 16, Heads = 3, TopK = 5, KeyDimension = 8,
            ExpertActivation = activation, ScoreActivation = score, QueryBatchNorm = bn, SparseGradients = sparse,
        };

    [TestMethod]
    [DataRow(ExpertActivation.Gelu, ScoreActivation.Softmax, true, true, DisplayName = "GELU, softmax, BN, training")]
    [DataRow(ExpertActivation.Gelu, ScoreActivation.Softmax, true, false, DisplayName = "GELU, softmax, BN, evaluation")]
    [DataRow(ExpertActivation.Relu, ScoreActivation.Sigmoid, true, true, DisplayName = "ReLU, sigmoid, BN, training")]
    [DataRow(ExpertActivation.Gelu, ScoreActivation.Softmax, false, true, DisplayName = "GELU, softmax, no BN")]
    public void ForwardEqualsNaivePerTokenLoop(ExpertActivation activation, ScoreActivation score, bool bn, bool training)
    {
        manual_seed(11);
        const int d = 24, T = 7;
        using var layer = new PeerLayer(d, Small(activation, score, bn));
        // Move BN's running statistics away from (0, 1) so evaluation mode is a real test.
        using (no_grad()) for (int i = 0; i < 3; i++) layer.forward(randn(32, d) * 2 + 0.5).Dispose();
        layer.train(training);
        using var x = randn(T, d);
        using var y = layer.forward(x);
        var rows = Enumerable.Range(0, T).Select(t => x[t].data<float>().ToArray()).ToArray();
        var expected = NaivePeerReference.Forward(layer, rows, training);
        var actual = y.detach().data<float>().ToArray();
        for (int t = 0; t < T; t++)
            for (int m = 0; m < d; m++)
                Assert.AreEqual(expected[t][m], actual[t * d + m], 1e-5, $"token {t}, feature {m}");
    }

    [TestMethod]
    public void ForwardKeepsLeadingDimensions()
    {
        manual_seed(2);
        using var layer = new PeerLayer(16, Small());
        using var y = layer.forward(randn(2, 5, 16));
        CollectionAssert.AreEqual(new long[] { 2, 5, 16 }, y.shape);
    }

    [TestMethod]
    public void WrongInputWidthNamesBothWidths()
    {
        using var layer = new PeerLayer(16, Small());
        var e = Assert.ThrowsExactly<ArgumentException>(() => layer.forward(randn(3, 12)));
        StringAssert.Contains(e.Message, "16");
        StringAssert.Contains(e.Message, "[3, 12]");
    }

    [TestMethod]
    [DataRow(false, DisplayName = "dense gradients")]
    [DataRow(true, DisplayName = "sparse gradients")]
    public void GradientsReachRouterAndExactlyTheRetrievedExperts(bool sparse)
    {
        manual_seed(5);
        const int d = 16;
        using var layer = new PeerLayer(d, Small(sparse: sparse));
        layer.train();
        using var x = randn(6, d);
        using var y = layer.forward(x);
        using var weights = randn(6, d);
        (y * weights).sum().backward();

        var (_, indices) = layer.Router.forward(x);
        var retrieved = indices.data<long>().Distinct().OrderBy(i => i).ToArray();

        Assert.IsTrue(NonZero(layer.Router.Retriever.SubKeys.grad), "sub-keys get no gradient");
        Assert.IsTrue(NonZero(layer.Router.QueryProjection.weight!.grad), "query weights get no gradient");
        Assert.IsTrue(NonZero(layer.Router.QueryNorm!.weight!.grad), "BN scale gets no gradient");
        Assert.IsTrue(NonZero(layer.Router.QueryNorm!.bias!.grad), "BN shift gets no gradient");
        foreach (var table in new[] { layer.DownWeights, layer.UpWeights })
        {
            var grad = table.grad!;
            Assert.AreEqual(sparse, grad.is_sparse, "gradient layout");
            var dense = sparse ? grad.to_dense() : grad;
            var touched = dense.abs().sum(1).nonzero().squeeze(-1).data<long>().OrderBy(i => i).ToArray();
            CollectionAssert.AreEqual(retrieved, touched, "expert rows with a gradient must be exactly the retrieved ones");
        }
    }

    private static bool NonZero(Tensor? grad) => grad is not null && grad.abs().sum().item<float>() > 0;
}
