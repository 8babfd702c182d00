using Microsoft.ML.Peer.Native;
using Microsoft.ML.Peer.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Tests.Layers;

[TestClass]
public sealed class ProductKeyRetrieverTests
{
    [TestMethod]
    [DataRow(4, 1, 4, 8, DisplayName = "n=4, h=1, k=n")]
    [DataRow(8, 2, 3, 16, DisplayName = "n=8, h=2, k=3")]
    [DataRow(16, 4, 16, 8, DisplayName = "n=16, h=4, k=n")]
    [DataRow(32, 3, 5, 32, DisplayName = "n=32, h=3, k=5")]
    [DataRow(64, 8, 16, 128, DisplayName = "n=64, h=8, k=16 (paper shape)")]
    public void RetrievalEqualsBruteForceOverAllCartesianKeys(int n, int heads, int k, int keyDimension)
    {
        foreach (var kernels in new[] { PeerKernels.Managed, PeerKernels.Native })
            RetrievalEqualsBruteForce(n, heads, k, keyDimension, kernels);
    }

    private static void RetrievalEqualsBruteForce(int n, int heads, int k, int keyDimension, PeerKernels kernels)
    {
        manual_seed(n * 131 + heads * 7 + k);
        using var retriever = new ProductKeyRetriever(n, keyDimension, k, kernels);
        const int tokens = 9;
        using var queries = randn(tokens, heads, keyDimension);
        var (scores, indices) = retriever.forward(queries);

        // Brute force: materialise all n² keys [c_a ; c'_b] and score every one.
        int half = keyDimension / 2;
        var sub = retriever.SubKeys.detach();
        using var keys = cat(new[]
        {
            sub[0].unsqueeze(1).expand(n, n, half).reshape(n * n, half),
            sub[1].unsqueeze(0).expand(n, n, half).reshape(n * n, half),
        }, 1);
        using var all = matmul(queries, keys.t());            // [T, h, n²]
        var (bruteScores, bruteIndices) = all.topk(k, dim: -1);

        Assert.AreEqual(tokens * heads * k, (int)indices.numel());
        var got = indices.data<long>().ToArray();
        var want = bruteIndices.data<long>().ToArray();
        var gotScores = scores.detach().data<float>().ToArray();
        var wantScores = bruteScores.data<float>().ToArray();
        for (int row = 0; row < tokens * heads; row++)
        {
            var gotSet = got.Skip(row * k).Take(k).OrderBy(x => x).ToArray();
            var wantSet = want.Skip(row * k).Take(k).OrderBy(x => x).ToArray();
            CollectionAssert.AreEqual(wantSet, gotSet, $"{kernels}, row {row}: index sets differ");
            for (int j = 0; j < k; j++)
                Assert.AreEqual(wantScores[row * k + j], gotScores[row * k + j], 1e-5, $"{kernels}, row {row}, rank {j}: scores differ");
            // The index must name the key whose score was reported.
            for (int j = 0; j < k; j++)
            {
                long index = got[row * k + j];
                float direct = all.reshape(tokens * heads, n * n)[row, index].item<float>();
                Assert.AreEqual(direct, gotScores[row * k + j], 1e-5, $"row {row}: index {index} does not carry its score");
            }
        }
    }

    [TestMethod]
    public void NormalizedSubKeysScoreByDirectionAlikeInBothKernelsAndTrainTheStoredKeys()
    {
        const int n = 16, heads = 2, k = 4, keyDimension = 8, tokens = 12;
        manual_seed(8);
        using var queries = randn(tokens, heads, keyDimension);
        using var weights = randn(tokens, heads, k);
        (Tensor Scores, Tensor Indices, Tensor KeyGrad, Tensor Keys) Run(PeerKernels kernels)
        {
            manual_seed(9);
            using var retriever = new ProductKeyRetriever(n, keyDimension, k, kernels, normalizeSubKeys: true);
            using (no_grad()) retriever.SubKeys.mul_(rand(2, n, 1) * 3 + 0.1);   // lengths 0.1–3.1 times the usual
            var (scores, indices) = retriever.forward(queries);
            (scores * weights).sum().backward();
            return (scores.detach().clone(), indices.clone(), retriever.SubKeys.grad!.clone(), retriever.SubKeys.detach().clone());
        }
        var managed = Run(PeerKernels.Managed);
        var native = Run(PeerKernels.Native);
        Assert.IsTrue(managed.Indices.eq(native.Indices).all().item<bool>(), "the kernels select different keys");
        Assert.IsTrue(managed.Scores.allclose(native.Scores, rtol: 1e-4, atol: 1e-5), "the kernels score differently");
        Assert.IsTrue(managed.KeyGrad.allclose(native.KeyGrad, rtol: 1e-3, atol: 1e-5),
            "the kernels send different gradients to the stored keys");
        Assert.IsTrue(native.KeyGrad.abs().sum().item<float>() > 0, "the stored keys get no gradient");
        // Each score is q1·c_a/|c_a| + q2·c'_b/|c'_b|: the keys' lengths do not count.
        var unit = native.Keys / native.Keys.norm(-1, keepdim: true);
        var idx = native.Indices.data<long>().ToArray();
        var got = native.Scores.data<float>().ToArray();
        for (int row = 0; row < tokens * heads; row++)
            for (int j = 0; j < k; j++)
            {
                long index = idx[row * k + j], a = index / n, b = index % n;
                var q = queries.reshape(tokens * heads, keyDimension)[row];
                float want = (q[..4].dot(unit[0][a]) + q[4..].dot(unit[1][b])).item<float>();
                Assert.AreEqual(want, got[row * k + j], 1e-4, $"row {row}, rank {j}");
            }
    }

    [TestMethod]
    public void IndicesStayInRange()
    {
        manual_seed(3);
        using var retriever = new ProductKeyRetriever(16, 8, 16);
        var (_, indices) = retriever.forward(randn(50, 2, 8));
        Assert.IsTrue(indices.min().item<long>() >= 0);
        Assert.IsTrue(indices.max().item<long>() < 256);
    }

    [TestMethod]
    public void WrongQueryShapeNamesTheExpectedShape()
    {
        using var retriever = new ProductKeyRetriever(8, 16, 4);
        var e = Assert.ThrowsExactly<ArgumentException>(() => retriever.forward(randn(3, 2, 10)));
        StringAssert.Contains(e.Message, "[tokens, heads, 16]");
    }
}
