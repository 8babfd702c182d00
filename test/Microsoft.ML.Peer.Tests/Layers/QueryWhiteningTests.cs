using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Training;
using Microsoft.ML.Peer.Tests.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Tests.Layers;

[TestClass]
public sealed class QueryWhiteningTests
{
    // Rows whose features are correlated within each group of 4: one direction carries most of the variance.
    private static Tensor Correlated(int rows, int groups, long seed)
    {
        manual_seed(seed);
        var (rotation, _) = linalg.qr(randn(groups, 4, 4));
        var mixing = tensor(new float[] { 3, 1, 0.5f, 0.3f }).view(1, 4, 1) * rotation;   // standard deviations 3, 1, 0.5, 0.3 along rotated axes
        var white = randn(groups, rows, 4);
        return (matmul(white, mixing).transpose(0, 1).reshape(rows, groups * 4) + 2).contiguous();
    }

    private static Tensor GroupCovariance(Tensor x, int groups)
    {
        var centred = (x - x.mean(new long[] { 0 })).view(x.shape[0], groups, -1).transpose(0, 1);
        return matmul(centred.transpose(1, 2), centred) / x.shape[0];
    }

    [TestMethod]
    public void TrainingWhitensEachHeadWithTheBatchStatisticsAndUpdatesTheRunningOnes()
    {
        using var whitening = new QueryWhitening(groups: 3, groupSize: 4);
        using var x = Correlated(512, 3, seed: 1);
        var before = whitening.RunningCovariance.clone();
        whitening.train();
        using var y = whitening.forward(x);
        var covariance = GroupCovariance(y.detach(), 3);
        var identity = eye(4).expand(3, 4, 4);
        // The ridge (1e-3 of the mean eigenvalue, 2.6) keeps the weakest direction (variance 0.09) 3% below 1.
        Assert.IsTrue((covariance - identity).abs().max().item<float>() < 0.05f,
            $"whitened covariance differs from I by {(covariance - identity).abs().max().item<float>():F4}");
        Assert.IsTrue(y.mean(new long[] { 0 }).abs().max().item<float>() < 1e-4f, "whitened queries are centred");
        var moved = whitening.RunningCovariance - before;
        Assert.IsTrue(moved.abs().max().item<float>() > 0.1f, "the running covariance moved towards the batch's");
        // The batch's scatter about the new running mean (0.1 × the batch mean): its covariance plus the outer product of the offset.
        var offset = (x.mean(new long[] { 0 }) * 0.9f).view(3, 4);
        var expected = 0.9f * before + 0.1f * (GroupCovariance(x, 3) * (512f / 511f) + offset.unsqueeze(2) * offset.unsqueeze(1));
        Assert.IsTrue(whitening.RunningCovariance.allclose(expected, rtol: 1e-3, atol: 1e-3),
            "running covariance = 0.9 · old + 0.1 · the batch's scatter about the running mean");
    }

    [TestMethod]
    public void EvaluationUsesTheRunningStatisticsOrTheBatchsWithoutChangingThem()
    {
        using var whitening = new QueryWhitening(groups: 2, groupSize: 4);
        using var x = Correlated(256, 2, seed: 2);
        whitening.eval();
        var mean = whitening.RunningMean.clone();
        var covariance = whitening.RunningCovariance.clone();
        // Fresh running statistics are (0, I): evaluation leaves the rows as they are (weight 1, bias 0).
        using var running = whitening.forward(x);
        Assert.IsTrue(running.allclose(x, rtol: 1e-3, atol: 1e-3));
        using var batch = whitening.Normalize(x, batchStatistics: true);
        whitening.train();
        using var training = whitening.forward(x);
        Assert.IsTrue(batch.allclose(training, rtol: 1e-4, atol: 1e-4), "batch-statistics evaluation whitens as training does");
        whitening.eval();
        whitening.Normalize(x, batchStatistics: true).Dispose();
        whitening.train();
        // Only the training pass above moved the running statistics.
        Assert.IsFalse(whitening.RunningMean.allclose(mean));
        whitening.SetStatistics(mean, covariance);
        whitening.eval();
        whitening.Normalize(x, batchStatistics: true).Dispose();
        Assert.IsTrue(whitening.RunningMean.eq(mean).all().item<bool>() && whitening.RunningCovariance.eq(covariance).all().item<bool>(),
            "batch-statistics evaluation changed the running statistics");
    }

    [TestMethod]
    public void GradientsFlowThroughTheWhiteningToTheQueriesAndTheAffine()
    {
        using var whitening = new QueryWhitening(groups: 2, groupSize: 4);
        using var x = Correlated(64, 2, seed: 3).requires_grad_();
        whitening.train();
        var y = whitening.forward(x);
        (y * arange(8).to(ScalarType.Float32)).sum().backward();
        Assert.IsTrue(x.grad is not null && x.grad.abs().sum().item<float>() > 0);
        Assert.IsTrue(whitening.Weight.grad!.abs().sum().item<float>() > 0);
        Assert.IsTrue(whitening.Bias.grad!.abs().sum().item<float>() > 0);
    }

    [TestMethod]
    public void WhitenedRouterSpreadsCorrelatedQueriesOverMoreExperts()
    {
        // Inputs of rank 2 in 16 dimensions: batch norm leaves every query on that plane, whitening spreads them. The ridge
        // bounds how far the 14 empty directions are raised, so the rows add small noise to fill them.
        manual_seed(4);
        using var basis = randn(2, 16);
        using var inputs = matmul(randn(2048, 2), basis) + 1e-2 * randn(2048, 16);
        int Used(bool whiten)
        {
            manual_seed(6);
            using var router = new ProductKeyRouter(16,
                new ProductKeyOptions { Experts = 32 * 32, Heads = 2, TopK = 4, KeyDimension = 16, QueryWhitening = whiten });
            router.train();
            var (_, indices) = router.forward(inputs);
            return (int)indices.flatten().unique().Item1.numel();
        }
        int batchNorm = Used(false), whitened = Used(true);
        Assert.IsTrue(whitened > 2 * batchNorm, $"experts reached: batch norm {batchNorm}, whitening {whitened}");
    }

    [TestMethod]
    public void ReestimationSetsTheExactMeanAndCovariance()
    {
        manual_seed(5);
        using var router = new ProductKeyRouter(12,
            new ProductKeyOptions { Experts = 8 * 8, Heads = 2, TopK = 4, KeyDimension = 8, QueryWhitening = true });
        router.eval();
        using var moments = router.NewQueryMoments();
        router.QueryMoments = moments;
        using var first = randn(40, 12) * 2;
        using var second = randn(24, 12) - 3;
        router.forward(first);
        router.forward(second);
        router.QueryMoments = null;
        router.SetQueryNormStatistics(moments);
        using var raw = router.QueryProjection.forward(cat(new[] { first, second })).detach();
        var whitening = router.QueryWhitening!;
        Assert.IsTrue(whitening.RunningMean.allclose(raw.mean(new long[] { 0 }), rtol: 1e-4, atol: 1e-5));
        Assert.IsTrue(whitening.RunningCovariance.allclose(GroupCovariance(raw, 2) * (64f / 63f), rtol: 1e-4, atol: 1e-5));
    }

    [TestMethod]
    public void WhiteningNeedsQueryBatchNormAndABoundedKeyDimension()
    {
        var noNorm = new ProductKeyOptions { QueryBatchNorm = false, QueryWhitening = true };
        var error = Assert.ThrowsExactly<ArgumentException>(() => noNorm.Validate());
        StringAssert.Contains(error.Message, nameof(ProductKeyOptions.QueryBatchNorm));
        var wide = new ProductKeyOptions { QueryWhitening = true, KeyDimension = 2048 };
        var range = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => wide.Validate());
        StringAssert.Contains(range.Message, nameof(ProductKeyOptions.KeyDimension));
    }

    [TestMethod]
    public void WhitenedLanguageModelTrainsSavesItsStatisticsAndCountsThem()
    {
        var options = TinyLanguageModels.Options(FeedForwardKind.Peer);
        options.Peer.QueryWhitening = true;
        options.Peer.NormalizeSubKeys = true;
        using var trainer = new LanguageModelTrainingLoop(options, TinyLanguageModels.Training(6));
        var sampler = new TokenBatchSampler(TinyLanguageModels.Stream(4000, seed: 2), 8, 16, 3);
        while (trainer.Step < 6) trainer.TrainStep(sampler);
        Assert.AreEqual(FlopCounter.StateElements(options), trainer.Model.state_dict().Values.Sum(t => t.numel()), "state elements");
        Assert.AreEqual(1, trainer.ReestimateQueryNorm(sampler, batches: 2));
        var result = trainer.Evaluate(TinyLanguageModels.Stream(600, seed: 9), 512);
        Assert.IsTrue(double.IsFinite(result.Perplexity) && result.Perplexity > 1, $"perplexity {result.Perplexity}");
    }
}
