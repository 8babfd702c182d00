using Microsoft.ML.Peer.Layers;

namespace Microsoft.ML.Peer.Tests.Layers;

[TestClass]
public sealed class PeerOptionsTests
{
    private static void AssertRejected(PeerOptions options, string option)
    {
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new PeerLayer(16, options));
        Assert.AreEqual(option, e.ParamName);
        StringAssert.Contains(e.Message, option);
    }

    [TestMethod]
    public void ExpertsNotASquareIsRejected() => AssertRejected(new PeerOptions { Experts = 1000, TopK = 4, KeyDimension = 8 }, "Experts");

    [TestMethod]
    public void TopKAboveSqrtNIsRejected() => AssertRejected(new PeerOptions { Experts = 64, TopK = 9, KeyDimension = 8 }, "TopK");

    [TestMethod]
    [DataRow(0)]
    [DataRow(-2)]
    public void NonPositiveHeadsAreRejected(int heads)
        => AssertRejected(new PeerOptions { Experts = 64, Heads = heads, TopK = 4, KeyDimension = 8 }, "Heads");

    [TestMethod]
    public void OddKeyDimensionIsRejected() => AssertRejected(new PeerOptions { Experts = 64, TopK = 4, KeyDimension = 7 }, "KeyDimension");

    [TestMethod]
    public void DefaultsAreThePapers()
    {
        var o = new PeerOptions();
        Assert.AreEqual(1024 * 1024, o.Experts);
        Assert.AreEqual(8, o.Heads);
        Assert.AreEqual(16, o.TopK);
        Assert.IsTrue(o.QueryBatchNorm);
        Assert.AreEqual(ExpertActivation.Gelu, o.ExpertActivation);
        Assert.AreEqual(ScoreActivation.Softmax, o.ScoreActivation);
        o.Validate();
    }
}
