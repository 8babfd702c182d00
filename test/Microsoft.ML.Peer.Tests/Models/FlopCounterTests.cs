using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;

namespace Microsoft.ML.Peer.Tests.Models;

[TestClass]
public sealed class FlopCounterTests
{
    // d = 8, T = 4, V = 16, 2 blocks, dense hidden 32; the sparse FFN (if any) in block 1.
    private static LanguageModelOptions Small(FeedForwardKind kind) => new()
    {
        VocabularySize = 16,
        ContextLength = 4,
        ModelDimension = 8,
        Layers = 2,
        AttentionHeads = 2,
        DenseHiddenDimension = 32,
        FeedForward = kind,
        Peer = new PeerOptions { Experts = 16, Heads = 2, TopK = 2, KeyDimension = 4 },
        ProductKeyMemory = new ProductKeyOptions { Experts = 16, Heads = 2, TopK = 2, KeyDimension = 4 },
        MoeExperts = 4,
        MoeTopK = 2,
        MoeHiddenDimension = 16,
    };

    [TestMethod]
    public void PeerFlopsMatchHandComputation()
    {
        var flops = FlopCounter.ForwardPerToken(Small(FeedForwardKind.Peer));
        Assert.AreEqual(2 * (8 * 64 + 4 * 4 * 8), flops.Attention);         // 2 × 640
        Assert.AreEqual(4 * 8 * 32, flops.DenseFeedForward);                 // block 0 only: 1,024
        Assert.AreEqual(4 * 2 * 2 * 8, flops.SparseFeedForward);             // 2·h·k·2·d = 128
        Assert.AreEqual(2 * 8 * 2 * 4 + 2 * 2 * 2 * 4 * 2 + 2 * 4, flops.Routing); // query 128 + sub-keys 64 + k² sums 8
        Assert.AreEqual(2 * (2 * 4 + 2 * 2), flops.Selection);               // h·(2n + k²) = 24
        Assert.AreEqual(2 * 8 * 16, flops.OutputHead);                       // 256
        Assert.AreEqual(2912, flops.Total);
        Assert.AreEqual(3.0 * 2912 * 1000, FlopCounter.TrainingFlops(Small(FeedForwardKind.Peer), 1000));
    }

    [TestMethod]
    public void OtherKindsMatchHandComputation()
    {
        // Dense: 1,280 attention + 2 × 1,024 FFW + 256 head.
        Assert.AreEqual(3584, FlopCounter.ForwardPerToken(Small(FeedForwardKind.Dense)).Total);
        // PKM: values 2·h·k·d = 64 instead of PEER's 128; same routing and selection.
        var pkm = FlopCounter.ForwardPerToken(Small(FeedForwardKind.ProductKeyMemory));
        Assert.AreEqual(64, pkm.SparseFeedForward);
        Assert.AreEqual(2848, pkm.Total);
        // MoE: 2 of 4 experts of hidden 16 (2 × 512), router 2·d·E = 64, 4 comparisons.
        var moe = FlopCounter.ForwardPerToken(Small(FeedForwardKind.MoE));
        Assert.AreEqual(1024, moe.SparseFeedForward);
        Assert.AreEqual(64, moe.Routing);
        Assert.AreEqual(3652, moe.Total);
    }

    [TestMethod]
    public void PeerParametersMatchHandComputation()
    {
        // Embeddings 128 + positions 32 + final LN 16; per block LNs 32 + attention 288; dense FFW 552;
        // PEER: query 72 + BN 16 + sub-keys 16 + two 16×8 tables 256.
        Assert.AreEqual(1728, FlopCounter.TotalParameters(Small(FeedForwardKind.Peer)));
        // A token uses h·k = 4 of the 16 expert pairs: 12 × 2 × 8 = 192 parameters are idle.
        Assert.AreEqual(1536, FlopCounter.ActiveParameters(Small(FeedForwardKind.Peer)));
        var noBatchNorm = Small(FeedForwardKind.Peer);
        noBatchNorm.Peer.QueryBatchNorm = false;
        Assert.AreEqual(1712, FlopCounter.TotalParameters(noBatchNorm));
        // An input batch norm adds a scale and a shift per input feature (d = 8).
        var inputNorm = Small(FeedForwardKind.Peer);
        inputNorm.Peer.InputBatchNorm = true;
        Assert.AreEqual(1728 + 16, FlopCounter.TotalParameters(inputNorm));
    }

    [TestMethod]
    public void ParameterCountsMatchTheBuiltModels()
    {
        foreach (var kind in Enum.GetValues<FeedForwardKind>())
        {
            var options = Small(kind);
            using var model = new TransformerLanguageModel(options);
            Assert.AreEqual(model.parameters().Sum(p => p.numel()), FlopCounter.TotalParameters(options), kind.ToString());
        }
        // MoE: 2 of the 4 experts (each 8·16 + 16 + 16·8 + 8 = 280) are idle for a token.
        var moe = Small(FeedForwardKind.MoE);
        Assert.AreEqual(FlopCounter.TotalParameters(moe) - 2 * 280, FlopCounter.ActiveParameters(moe));
        Assert.AreEqual(FlopCounter.TotalParameters(Small(FeedForwardKind.Dense)),
            FlopCounter.ActiveParameters(Small(FeedForwardKind.Dense)));
    }

    [TestMethod]
    public void StateElementsMatchTheBuiltModelsStateDictionary()
    {
        // Loading refuses a weights stream whose size differs from StateElements before it builds the model, so the count
        // must be exact for every feed-forward kind, with and without blocks and query batch norm, for both models.
        foreach (var kind in Enum.GetValues<FeedForwardKind>())
        {
            foreach (var (batchNorm, inputNorm) in new[] { (true, false), (false, false), (true, true), (false, true) })
            {
                var lm = Small(kind);
                lm.Peer.QueryBatchNorm = lm.ProductKeyMemory.QueryBatchNorm = batchNorm;
                lm.Peer.InputBatchNorm = lm.ProductKeyMemory.InputBatchNorm = inputNorm;
                using (var model = new TransformerLanguageModel(lm))
                {
                    Assert.AreEqual(model.state_dict().Values.Sum(t => t.numel()), FlopCounter.StateElements(lm),
                        $"LM {kind} BN {batchNorm} input BN {inputNorm}");
                    Assert.AreEqual(model.parameters().Sum(p => p.numel()), FlopCounter.TotalParameters(lm),
                        $"LM {kind} BN {batchNorm} input BN {inputNorm}");
                }
                foreach (int layers in new[] { 0, 2 })
                {
                    var classifier = new TextClassifierOptions
                    {
                        VocabularySize = 16, ClassCount = 3, ContextLength = 4, ModelDimension = 8, Layers = layers, AttentionHeads = 2,
                        FeedForward = kind, Peer = lm.Peer.Clone(), ProductKeyMemory = lm.ProductKeyMemory.Clone(),
                        MoeExperts = 4, MoeTopK = 2, MoeHiddenDimension = 16,
                    };
                    foreach (var pooling in Enum.GetValues<TextPooling>())
                    {
                        classifier.Pooling = pooling;
                        classifier.BigramBuckets = layers == 0 && pooling == TextPooling.Mean ? 32 : 0;
                        classifier.LinearBag = pooling is TextPooling.Attention or TextPooling.Max;
                        classifier.LinearBagBuckets = pooling == TextPooling.Attention ? 16 : 0;
                        using var model = new TransformerTextClassifier(classifier);
                        string what = $"classifier {kind} layers {layers} BN {batchNorm} {pooling} pairs {classifier.BigramBuckets} " +
                                      $"bag {classifier.LinearBag} {classifier.LinearBagBuckets}";
                        Assert.AreEqual(model.parameters().Sum(p => p.numel()), FlopCounter.TotalParameters(classifier), what);
                        Assert.AreEqual(model.state_dict().Values.Sum(t => t.numel()), FlopCounter.StateElements(classifier), what);
                    }
                }
            }
        }
    }
}
