using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Tests;

/// <summary>
/// Proves the libtorch native backend loads and computes. Any failure to load
/// libLibTorchSharp.so (e.g. the GLIBCXX_3.4.32 need on Debian 12, see
/// src/Peer.Native/tools/elf_patch.cpp) surfaces here as an exception from the first torch call.
/// </summary>
[TestClass]
public sealed class TorchBackendTests
{
    [TestMethod]
    public void MatMul3x3_MatchesHandComputedProduct()
    {
        using var a = tensor(new float[] { 1, 2, 3, 4, 5, 6, 7, 8, 9 }).reshape(3, 3);
        using var b = tensor(new float[] { 9, 8, 7, 6, 5, 4, 3, 2, 1 }).reshape(3, 3);

        using var product = matmul(a, b);

        CollectionAssert.AreEqual(new long[] { 3, 3 }, product.shape);
        // Row i of a dotted with column j of b, e.g. [0,0] = 1*9 + 2*6 + 3*3 = 30.
        float[] expected = { 30, 24, 18, 84, 69, 54, 138, 114, 90 };
        CollectionAssert.AreEqual(expected, product.data<float>().ToArray());
    }

    [TestMethod]
    public void Randn_WithSameSeed_IsReproducible()
    {
        manual_seed(1234);
        using var first = randn(4, 5);
        manual_seed(1234);
        using var second = randn(4, 5);
        manual_seed(4321);
        using var other = randn(4, 5);

        Assert.IsTrue(ExactlyEqual(first, second), "same seed must give the same draws");
        Assert.IsFalse(ExactlyEqual(first, other), "different seeds must give different draws");
    }

    [TestMethod]
    public void Randn_MatchesLibtorchGeneratorForSeed42()
    {
        // PyTorch on CPU: torch.manual_seed(42); torch.randn(3) -> [0.3367, 0.1288, 0.2345].
        // Matching it shows the numbers come from libtorch's generator, not a managed fallback.
        manual_seed(42);
        using var x = randn(3);

        float[] actual = x.data<float>().ToArray();
        float[] expected = { 0.3367f, 0.1288f, 0.2345f };
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.AreEqual(expected[i], actual[i], 1e-4f, $"element {i}");
        }
    }

    private static bool ExactlyEqual(Tensor a, Tensor b)
    {
        using var same = a.eq(b);
        using var all = same.all();
        return all.item<bool>();
    }
}
