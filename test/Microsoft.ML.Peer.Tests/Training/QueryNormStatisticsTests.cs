using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Tests.Training;

[TestClass]
public sealed class QueryNormStatisticsTests
{
    private static ProductKeyRouter Router(bool batchNorm = true)
    {
        manual_seed(5);
        return new ProductKeyRouter(12,
            new ProductKeyOptions { Experts = 8 * 8, Heads = 2, TopK = 4, KeyDimension = 8, QueryBatchNorm = batchNorm });
    }

    [TestMethod]
    public void BatchStatisticsNormaliseLikeTrainingAndLeaveTheRunningOnesAlone()
    {
        using var router = Router();
        using var tokens = randn(64, 12) * 3 + 1;
        router.eval();
        var runningMean = router.QueryNorm!.running_mean!.clone();
        var runningVariance = router.QueryNorm.running_var!.clone();

        var (runningGates, runningIndices) = router.forward(tokens);
        router.EvaluationStatistics = QueryNormStatistics.Batch;
        var (batchGates, batchIndices) = router.forward(tokens);
        router.EvaluationStatistics = QueryNormStatistics.Running;
        Assert.IsFalse(runningIndices.eq(batchIndices).all().item<bool>(),
            "the fresh running statistics (0, 1) differ from this batch's, so the experts must differ");
        Assert.IsTrue(router.QueryNorm.running_mean.eq(runningMean).all().item<bool>(),
            "batch-statistics evaluation changed the running mean");
        Assert.IsTrue(router.QueryNorm.running_var.eq(runningVariance).all().item<bool>(),
            "batch-statistics evaluation changed the running variance");

        // Training mode normalises by the same batch statistics: the same experts and router weights.
        router.train();
        var (trainGates, trainIndices) = router.forward(tokens);
        Assert.IsTrue(trainIndices.eq(batchIndices).all().item<bool>());
        Assert.IsTrue(trainGates.allclose(batchGates, rtol: 1e-4, atol: 1e-5));
    }

    [TestMethod]
    public void ReestimatedStatisticsAreTheExactMomentsOfTheRawQueries()
    {
        using var router = Router();
        router.eval();
        var moments = new QueryMomentSums();
        router.QueryMoments = moments;
        using var first = randn(40, 12) * 2;
        using var second = randn(24, 12) - 3;
        router.forward(first);
        router.forward(second);
        router.QueryMoments = null;
        router.SetQueryNormStatistics(moments);
        using var raw = router.QueryProjection.forward(cat(new[] { first, second })).detach();
        Assert.AreEqual(64L, moments.Count);
        Assert.IsTrue(router.QueryNorm!.running_mean!.allclose(raw.mean(new long[] { 0 }), rtol: 1e-4, atol: 1e-5));
        Assert.IsTrue(router.QueryNorm.running_var!.allclose(raw.var(0, unbiased: true), rtol: 1e-4, atol: 1e-5));
        moments.Dispose();
        // Without a query norm there is nothing to set, and it is not an error.
        using var plain = Router(batchNorm: false);
        using var more = new QueryMomentSums();
        more.Add(randn(4, 16));
        plain.SetQueryNormStatistics(more);
    }

    [TestMethod]
    public void InputBatchNormIsReestimatedWithTheQueryNorm()
    {
        var options = TinyLanguageModels.Options(FeedForwardKind.Peer);
        options.Peer.InputBatchNorm = true;
        using var trainer = new LanguageModelTrainingLoop(options, TinyLanguageModels.Training(4));
        var sampler = new TokenBatchSampler(TinyLanguageModels.Stream(4000, seed: 2), 8, 16, 3);
        while (trainer.Step < 4) trainer.TrainStep(sampler);
        var router = trainer.Model.ProductKeyRouters.Single().Router;
        var inputMean = router.InputNorm!.running_mean!.clone();
        Assert.AreEqual(1, trainer.ReestimateQueryNorm(sampler, batches: 3));
        Assert.IsFalse(router.InputNorm.running_mean!.eq(inputMean).all().item<bool>(), "the input norm was not re-estimated");
        // The model still evaluates with the re-estimated statistics.
        var batches = Enumerable.Range(1, 3).Select(s => sampler.Batch(s).Inputs).ToList();
        var tokens = batches.SelectMany(b => b.data<long>().Select(v => (int)v)).ToArray();
        Assert.IsTrue(double.IsFinite(trainer.Evaluate(tokens).Loss));
    }

    [TestMethod]
    public void TrainerReestimatesFromTrainingBatchesAndDiagnosesBothWays()
    {
        var tokens = TinyLanguageModels.Stream(4000, seed: 2);
        var validation = TinyLanguageModels.Stream(600, seed: 9);
        var options = TinyLanguageModels.Options(FeedForwardKind.Peer);
        using var trainer = new LanguageModelTrainingLoop(options, TinyLanguageModels.Training(12));
        var sampler = new TokenBatchSampler(tokens, 8, 16, 3);
        while (trainer.Step < 12) trainer.TrainStep(sampler);
        var router = trainer.Model.ProductKeyRouters.Single().Router;
        var before = router.QueryNorm!.running_mean!.clone();
        var diagnostics = trainer.Diagnose(validation);
        Assert.AreEqual(12, diagnostics.Step);
        Assert.AreEqual(12L * 8 * 16, diagnostics.TokensSeen);
        Assert.AreEqual(diagnostics.Running.Tokens, diagnostics.Batch.Tokens);
        Assert.IsTrue(router.QueryNorm.running_mean.eq(before).all().item<bool>(), "diagnostics changed the running statistics");
        Assert.AreNotEqual(diagnostics.Running.Loss, diagnostics.Batch.Loss,
            "running and batch statistics cannot give identical losses on a fresh model");

        Assert.AreEqual(1, trainer.ReestimateQueryNorm(sampler, batches: 4));
        Assert.IsFalse(router.QueryNorm.running_mean.eq(before).all().item<bool>());
        Assert.IsTrue(trainer.Model.training, "the trainer's model is left in training mode");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => trainer.ReestimateQueryNorm(sampler, 0));

        using var dense = new LanguageModelTrainingLoop(TinyLanguageModels.Options(FeedForwardKind.Dense), TinyLanguageModels.Training(2));
        Assert.AreEqual(0, dense.ReestimateQueryNorm(sampler, 2));
        var denseDiagnostics = dense.Diagnose(validation);
        Assert.AreEqual(denseDiagnostics.Running.Loss, denseDiagnostics.Batch.Loss, 1e-9,
            "a model without query norms scores the same either way");
    }

    [TestMethod]
    public void TrainReportsDiagnosticsAtTheRequestedSteps()
    {
        var tokens = TinyLanguageModels.Stream(4000, seed: 2);
        var validation = TinyLanguageModels.Stream(600, seed: 9);
        var training = TinyLanguageModels.Training(10);
        training.DiagnoseEvery = 4;
        training.ReestimateQueryNormBatches = 2;
        using var trainer = new LanguageModelTrainingLoop(TinyLanguageModels.Options(FeedForwardKind.Peer), training);
        var reported = new List<UsageDiagnostics>();
        trainer.Train(tokens, validation, p => { if (p.Diagnostics is { } d) reported.Add(d); });
        CollectionAssert.AreEqual(new[] { 4, 8 }, reported.Select(d => d.Step).ToArray());
        Assert.IsTrue(reported.All(d => d.Running.ExpertUsage.Single().Value.Retrievals > 0 &&
            d.Batch.ExpertUsage.Single().Value.Retrievals > 0));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new LanguageModelTrainingOptions { DiagnoseEvery = -1 }.Validate(16));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new LanguageModelTrainingOptions { ReestimateQueryNormBatches = -1 }.Validate(16));
    }
}
