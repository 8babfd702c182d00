using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Training;

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
        Assert.AreEqual(FeedForwardKind.ProductKeyMemory, o.FeedForward);
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
        Assert.AreEqual(ExpertTablePrecision.Float32, o.ExpertTablePrecision);
        Assert.AreEqual(0.1, o.ValidationFraction);
        Assert.AreEqual(2, o.EarlyStoppingPatience);
        Assert.AreEqual(new ClassifierTrainingOptions().EarlyStoppingPatience, o.EarlyStoppingPatience, "stated once, on the training options");
        Assert.AreEqual(64, o.MinimumStepsPerEpoch);
        Assert.AreEqual(3, o.EnsembleSize);
        Assert.AreEqual(new ClassifierTrainingOptions().MinimumStepsPerEpoch, o.MinimumStepsPerEpoch, "stated once, on the training options");
        Assert.IsTrue(o.CalibrateScores);
        Assert.IsTrue(o.RefitOnAllRows);
        Assert.AreEqual(0.1, o.LabelSmoothing);
        Assert.AreEqual(new TextClassifierOptions().LabelSmoothing, o.LabelSmoothing, "stated once, on the model's options");
        Assert.AreEqual(TextPooling.Attention, o.Pooling);
        Assert.AreEqual(TextClassifierOptions.RecommendedPooling, o.Pooling, "stated once, on the model's options");
        Assert.AreEqual(0, o.BigramBuckets);
        Assert.IsTrue(o.LinearBag);
        Assert.AreEqual(TextClassifierOptions.RecommendedLinearBag, o.LinearBag, "stated once, on the model's options");
        Assert.AreEqual(2048, o.LinearBagLength);
        Assert.AreEqual(TextClassifierOptions.RecommendedLinearBagLength, o.LinearBagLength, "stated once, on the model's options");
        Assert.AreEqual(0, o.TokenDropout);
        Assert.IsTrue(o.AverageWeights);
        Assert.AreEqual(new ClassifierTrainingOptions().AverageWeights, o.AverageWeights, "stated once, on the training options");
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
        Assert.AreEqual(ExpertTablePrecision.Float32, o.ExpertTablePrecision);
    }

    [TestMethod]
    public void ModelAndLayerDefaultsAreStatedOncePerTask()
    {
        // The layer keeps the paper's configuration.
        var layer = new PeerOptions();
        Assert.AreEqual(1024 * 1024, layer.Experts);
        Assert.AreEqual((8, 16, 128), (layer.Heads, layer.TopK, layer.KeyDimension));
        // Each task's model options state its recommended configuration, PEER and PKM alike ...
        var lm = new LanguageModelOptions();
        Assert.AreEqual((128, 128, 2, 4), (lm.ContextLength, lm.ModelDimension, lm.Layers, lm.AttentionHeads));
        foreach (ProductKeyOptions p in new ProductKeyOptions[] { lm.Peer, lm.ProductKeyMemory })
            Assert.AreEqual((128 * 128, 8, 16, 64, true), (p.Experts, p.Heads, p.TopK, p.KeyDimension, p.SparseGradients));
        var classifier = new TextClassifierOptions();
        Assert.AreEqual((512, 128, 0, 4),
            (classifier.ContextLength, classifier.ModelDimension, classifier.Layers, classifier.AttentionHeads));
        foreach (ProductKeyOptions p in new ProductKeyOptions[] { classifier.Peer, classifier.ProductKeyMemory })
            Assert.AreEqual((128 * 128, 4, 8, 64, true), (p.Experts, p.Heads, p.TopK, p.KeyDimension, p.SparseGradients));

        // ... and the ML.NET options of that task map back onto exactly those settings.
        AssertSameModel(lm, new PeerLanguageModelTrainer.Options().ModelOptions(vocabularySize: 8192));
        AssertSameModel(classifier,
            new PeerTextClassificationTrainer.Options().ModelOptions(vocabularySize: 8192, classCount: 2, paddingId: 0));
    }

    private static void AssertSameModel(TransformerOptions expected, TransformerOptions actual)
    {
        Assert.AreEqual((expected.ContextLength, expected.ModelDimension, expected.Layers, expected.AttentionHeads, expected.FeedForward,
            expected.MoeExperts, expected.MoeTopK),
            (actual.ContextLength, actual.ModelDimension, actual.Layers, actual.AttentionHeads, actual.FeedForward, actual.MoeExperts,
                actual.MoeTopK));
        foreach (var (e, a) in new (ProductKeyOptions, ProductKeyOptions)[]
            { (expected.Peer, actual.Peer), (expected.ProductKeyMemory, actual.ProductKeyMemory) })
            Assert.AreEqual((e.Experts, e.Heads, e.TopK, e.KeyDimension, e.QueryBatchNorm, e.QueryWhitening, e.NormalizeSubKeys,
                e.SparseGradients),
                (a.Experts, a.Heads, a.TopK, a.KeyDimension, a.QueryBatchNorm, a.QueryWhitening, a.NormalizeSubKeys, a.SparseGradients));
        Assert.AreEqual(expected.Peer.ExpertTablePrecision, actual.Peer.ExpertTablePrecision);
    }

    [TestMethod]
    public void FlatFieldsMapOntoEveryProductKeyLayer()
    {
        var o = new PeerTextClassificationTrainer.Options
        {
            Experts = 16 * 16, Heads = 2, TopK = 3, KeyDimension = 8, QueryBatchNorm = true, QueryWhitening = true, NormalizeSubKeys = true,
            Layers = 2, SparseBlocks = new[] { 1 }, MoeExperts = 5, MoeTopK = 3, MaxSequenceLength = 64, LabelSmoothing = 0.1,
            ExpertTablePrecision = ExpertTablePrecision.BFloat16,
        };
        var model = o.ModelOptions(vocabularySize: 100, classCount: 3, paddingId: 7);
        foreach (ProductKeyOptions layer in new ProductKeyOptions[] { model.Peer, model.ProductKeyMemory })
        {
            Assert.AreEqual((16 * 16, 2, 3, 8), (layer.Experts, layer.Heads, layer.TopK, layer.KeyDimension));
            Assert.IsTrue(layer.QueryBatchNorm && layer.QueryWhitening && layer.NormalizeSubKeys && layer.SparseGradients);
        }
        Assert.AreEqual((100, 3, 7, 64, 2, 5, 3),
            (model.VocabularySize, model.ClassCount, model.PaddingId, model.ContextLength, model.Layers, model.MoeExperts, model.MoeTopK));
        CollectionAssert.AreEqual(new[] { 1 }, model.SparseBlocks);
        Assert.AreEqual(0.1, model.LabelSmoothing);
        Assert.AreEqual(ExpertTablePrecision.BFloat16, model.Peer.ExpertTablePrecision);
    }
}
