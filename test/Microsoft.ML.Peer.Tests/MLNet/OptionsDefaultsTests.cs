using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;

namespace Microsoft.ML.Peer.Tests.MLNet;

/// <summary>
/// The public defaults, pinned: the ML.NET options derive the classifier's from the model and training settings where
/// they are stated, and map every field onto the model in one place; neither may change a default a user relies on.
/// </summary>
[TestClass]
public sealed class OptionsDefaultsTests
{
    [TestMethod]
    public void ClassifierOptionsKeepTheRecommendedConfiguration()
    {
        var o = new PeerTextClassificationTrainer.Options();
        Assert.AreEqual(512, o.MaxSequenceLength);
        Assert.AreEqual(128, o.ModelDimension);
        Assert.AreEqual(0, o.Layers);
        Assert.AreEqual(4, o.AttentionHeads);
        Assert.AreEqual(FeedForwardKind.Peer, o.FeedForward);
        Assert.AreEqual(128 * 128, o.Experts);
        Assert.AreEqual(4, o.Heads);
        Assert.AreEqual(8, o.TopK);
        Assert.AreEqual(64, o.KeyDimension);
        Assert.IsTrue(o.QueryBatchNorm);
        Assert.AreEqual(8192, o.VocabularySize);
        Assert.AreEqual(4, o.Epochs);
        Assert.AreEqual(32, o.BatchSize);
        Assert.AreEqual(5e-3, o.LearningRate);
        Assert.AreEqual(30, o.WarmupSteps);
        Assert.AreEqual(0.1, o.WeightDecay);
        Assert.AreEqual(8, o.MoeExperts);
        Assert.AreEqual(2, o.MoeTopK);
    }

    [TestMethod]
    public void LanguageModelOptionsKeepTheirDefaults()
    {
        var o = new PeerLanguageModelTrainer.Options();
        Assert.AreEqual(128, o.MaxSequenceLength);
        Assert.AreEqual(128, o.ModelDimension);
        Assert.AreEqual(2, o.Layers);
        Assert.AreEqual(4, o.AttentionHeads);
        Assert.AreEqual(128 * 128, o.Experts);
        Assert.AreEqual(8, o.Heads);
        Assert.AreEqual(16, o.TopK);
        Assert.AreEqual(64, o.KeyDimension);
        Assert.AreEqual(8192, o.VocabularySize);
        Assert.AreEqual(1, o.Epochs);
        Assert.AreEqual(16, o.BatchSize);
        Assert.AreEqual(1e-3, o.LearningRate);
        Assert.AreEqual(20, o.WarmupSteps);
        Assert.AreEqual(0.1, o.WeightDecay);
    }

    [TestMethod]
    public void ModelAndLayerDefaultsAreUnchanged()
    {
        var layer = new PeerOptions();
        Assert.AreEqual(1024 * 1024, layer.Experts);
        Assert.AreEqual((8, 16, 128), (layer.Heads, layer.TopK, layer.KeyDimension));
        var lm = new LanguageModelOptions();
        Assert.AreEqual(256 * 256, lm.Peer.Experts);
        Assert.AreEqual(256 * 256, lm.ProductKeyMemory.Experts);
        Assert.AreEqual((128, 256, 4), (lm.ContextLength, lm.ModelDimension, lm.Layers));
        var classifier = new TextClassifierOptions();
        Assert.AreEqual(128 * 128, classifier.Peer.Experts);
        Assert.AreEqual((4, 8, 64, true), (classifier.Peer.Heads, classifier.Peer.TopK, classifier.Peer.KeyDimension, classifier.Peer.SparseGradients));
    }

    [TestMethod]
    public void FlatFieldsMapOntoEveryProductKeyLayer()
    {
        var o = new PeerTextClassificationTrainer.Options
        {
            Experts = 16 * 16, Heads = 2, TopK = 3, KeyDimension = 8, QueryBatchNorm = true, QueryWhitening = true, NormalizeSubKeys = true,
            Layers = 2, SparseBlocks = new[] { 1 }, MoeExperts = 5, MoeTopK = 3, MaxSequenceLength = 64, LabelSmoothing = 0.1,
        };
        var model = o.ModelOptions(vocabularySize: 100, classCount: 3, paddingId: 7);
        foreach (ProductKeyOptions layer in new ProductKeyOptions[] { model.Peer, model.ProductKeyMemory })
        {
            Assert.AreEqual((16 * 16, 2, 3, 8), (layer.Experts, layer.Heads, layer.TopK, layer.KeyDimension));
            Assert.IsTrue(layer.QueryBatchNorm && layer.QueryWhitening && layer.NormalizeSubKeys && layer.SparseGradients);
        }
        Assert.AreEqual((100, 3, 7, 64, 2, 5, 3), (model.VocabularySize, model.ClassCount, model.PaddingId, model.ContextLength, model.Layers, model.MoeExperts, model.MoeTopK));
        CollectionAssert.AreEqual(new[] { 1 }, model.SparseBlocks);
        Assert.AreEqual(0.1, model.LabelSmoothing);
    }
}
