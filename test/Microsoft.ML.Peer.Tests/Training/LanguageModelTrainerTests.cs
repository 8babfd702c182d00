using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Tests.Training;

[TestClass]
public sealed class LanguageModelTrainerTests
{
    [TestMethod]
    [DataRow(FeedForwardKind.Dense)]
    [DataRow(FeedForwardKind.MoE)]
    [DataRow(FeedForwardKind.ProductKeyMemory)]
    [DataRow(FeedForwardKind.Peer)]
    public void EachFeedForwardKindTrainsBelowItsInitialLoss(FeedForwardKind kind)
    {
        var train = TinyLanguageModels.Stream(4000, seed: 1);
        var validation = TinyLanguageModels.Stream(600, seed: 2);
        using var trainer = new LanguageModelTrainingLoop(TinyLanguageModels.Options(kind), TinyLanguageModels.Training(60));
        var before = trainer.Evaluate(validation);
        var after = trainer.Train(train, validation)!;
        Assert.AreEqual(60, trainer.Step);
        Assert.IsTrue(after.Loss < before.Loss - 0.5, $"{kind}: validation loss {before.Loss:F3} → {after.Loss:F3}");
        Assert.IsTrue(after.Perplexity < 6,
            $"{kind}: validation perplexity {after.Perplexity:F2} (uniform would be {TinyLanguageModels.Vocabulary})");
        bool productKeys = kind is FeedForwardKind.Peer or FeedForwardKind.ProductKeyMemory;
        Assert.AreEqual(productKeys ? 1 : 0, after.ExpertUsage.Count, "usage is reported for each product-key layer");
    }

    [TestMethod]
    public void SparseRowAdamWFollowsDenseAdamWOnASmallPool()
    {
        // The row-sparse optimizer skips untouched rows (a documented approximation); on a small pool,
        // where nearly every row is touched every step, its loss curve must track dense AdamW's.
        var train = TinyLanguageModels.Stream(4000, seed: 1);
        var validation = TinyLanguageModels.Stream(600, seed: 2);
        double Final(bool sparse)
        {
            var options = TinyLanguageModels.Options(FeedForwardKind.Peer);
            options.Peer.SparseGradients = sparse;
            using var trainer = new LanguageModelTrainingLoop(options, TinyLanguageModels.Training(60));
            return trainer.Train(train, validation)!.Loss;
        }
        double dense = Final(false), sparse = Final(true);
        Assert.IsTrue(Math.Abs(dense - sparse) < 0.1,
            $"validation loss after 60 steps: dense AdamW {dense:F4}, row-sparse AdamW {sparse:F4}");
    }

    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void ExpertLearningRateScaleStepsOnlyTheExpertTablesFaster(bool sparse)
    {
        // One AdamW step moves a weight by lr·(m̂/√v̂ + decay·w), linear in lr: doubling the tables' rate doubles their step
        // and leaves every other weight's step as it was.
        var data = TinyLanguageModels.Stream(2000, 5);
        (Tensor Table, Tensor Other) FirstStep(double scale)
        {
            var options = TinyLanguageModels.Options(FeedForwardKind.Peer);
            options.Peer.SparseGradients = sparse;
            var training = TinyLanguageModels.Training(10);
            training.WarmupSteps = 0;
            training.GradientClipNorm = 0;
            training.ExpertLearningRateScale = scale;
            using var trainer = new LanguageModelTrainingLoop(options, training);
            var peer = trainer.Model.Blocks.Select(b => b.FeedForward).OfType<Microsoft.ML.Peer.Layers.PeerLayer>().Single();
            var embedding = trainer.Model.parameters().First(p => p.dim() == 2 && p.shape[0] == TinyLanguageModels.Vocabulary);
            var (table, other) = (peer.DownWeights.detach().clone(), embedding.detach().clone());
            trainer.TrainStep(new TokenBatchSampler(data, 8, 16, 3));
            return (peer.DownWeights.detach() - table, embedding.detach() - other);
        }
        var (table1, other1) = FirstStep(1);
        var (table2, other2) = FirstStep(2);
        Assert.IsTrue(table1.abs().max().item<float>() > 0, "the table moved");
        Assert.IsTrue((table2 - 2 * table1).abs().max().item<float>() < 1e-6,
            $"table step at scale 2 / scale 1: {(table2.abs().sum() / table1.abs().sum()).item<float>():F4}");
        Assert.IsTrue((other2 - other1).abs().max().item<float>() < 1e-7, "the other weights' step does not change");
    }

    [TestMethod]
    public void ExpertLearningRateScaleMustBePositive()
    {
        var training = TinyLanguageModels.Training(10);
        training.ExpertLearningRateScale = 0;
        var error = Assert.ThrowsExactly<ArgumentOutOfRangeException>(
            () => new LanguageModelTrainingLoop(TinyLanguageModels.Options(FeedForwardKind.Peer), training));
        StringAssert.Contains(error.Message, nameof(LanguageModelTrainingOptions.ExpertLearningRateScale));
    }

    [TestMethod]
    [DataRow(Microsoft.ML.Peer.Layers.ExpertTablePrecision.Float32)]
    [DataRow(Microsoft.ML.Peer.Layers.ExpertTablePrecision.BFloat16)]
    public void SparseGradientRunResumesToTheSameLossCurve(Microsoft.ML.Peer.Layers.ExpertTablePrecision precision)
    {
        // bf16: the native stochastic rounding draws its noise from (seed, row, step), so a resumed run rounds alike.
        var data = TinyLanguageModels.Stream(3000, 4);
        var options = TinyLanguageModels.Options(FeedForwardKind.Peer);
        options.Peer.SparseGradients = true;
        options.Peer.ExpertTablePrecision = precision;
        var path = Path.Combine(Path.GetTempPath(), $"peer-sparse-{Guid.NewGuid():N}.bin");
        try
        {
            using var straight = new LanguageModelTrainingLoop(options, TinyLanguageModels.Training(10));
            straight.Train(data);
            using (var first = new LanguageModelTrainingLoop(options, TinyLanguageModels.Training(10)))
            {
                var sampler = new TokenBatchSampler(data, 8, 16, 3);
                for (int i = 0; i < 4; i++) first.TrainStep(sampler);
                first.SaveCheckpoint(path);
            }
            using var resumed = LanguageModelTrainingLoop.LoadCheckpoint(path);
            resumed.Train(data);
            for (int i = 0; i < 10; i++)
                Assert.AreEqual(straight.History[i].Loss, resumed.History[i].Loss, 1e-6, $"step {i}");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void SparseBlockIsTheMiddleOneByDefault()
    {
        var options = TinyLanguageModels.Options(FeedForwardKind.Peer);
        options.Layers = 4;
        using var model = new TransformerLanguageModel(options);
        CollectionAssert.AreEqual(new[] { 2 }, model.ProductKeyRouters.Select(r => r.Block).ToArray());
        Assert.IsInstanceOfType<Microsoft.ML.Peer.Layers.DenseFeedForward>(model.Blocks[0].FeedForward);
        Assert.IsInstanceOfType<Microsoft.ML.Peer.Layers.PeerLayer>(model.Blocks[2].FeedForward);
    }

    [TestMethod]
    public void CheckpointSaveThenLoadGivesIdenticalLogits()
    {
        var path = Path.Combine(Path.GetTempPath(), $"peer-ckpt-{Guid.NewGuid():N}.bin");
        try
        {
            using var trainer =
                new LanguageModelTrainingLoop(TinyLanguageModels.Options(FeedForwardKind.Peer), TinyLanguageModels.Training(10));
            trainer.Train(TinyLanguageModels.Stream(2000, 1));
            trainer.SaveCheckpoint(path);
            using var loaded = LanguageModelTrainingLoop.LoadCheckpoint(path);
            Assert.AreEqual(trainer.Step, loaded.Step);
            using var tokens = tensor(TinyLanguageModels.Stream(32, 9).Select(t => (long)t).ToArray(), new long[] { 2, 16 });
            trainer.Model.eval();
            loaded.Model.eval();
            using var noGrad = no_grad();
            using var a = trainer.Model.forward(tokens);
            using var b = loaded.Model.forward(tokens);
            Assert.IsTrue((a == b).all().item<bool>(), "logits after a checkpoint round trip must be bit-identical");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void ResumedRunFollowsTheSameLossCurve()
    {
        var data = TinyLanguageModels.Stream(3000, 4);
        var path = Path.Combine(Path.GetTempPath(), $"peer-resume-{Guid.NewGuid():N}.bin");
        try
        {
            using var straight =
                new LanguageModelTrainingLoop(TinyLanguageModels.Options(FeedForwardKind.Peer), TinyLanguageModels.Training(12));
            straight.Train(data);

            var interrupted = TinyLanguageModels.Training(12);
            interrupted.TimeLimit = TimeSpan.Zero;             // stops before the first step...
            using (var first = new LanguageModelTrainingLoop(TinyLanguageModels.Options(FeedForwardKind.Peer),
                TinyLanguageModels.Training(12)))
            {
                var sampler = new TokenBatchSampler(data, 8, 16, 3);
                for (int i = 0; i < 5; i++) first.TrainStep(sampler);   // ...so take 5 steps by hand, then "crash"
                first.SaveCheckpoint(path);
            }
            using var resumed = LanguageModelTrainingLoop.LoadCheckpoint(path);
            Assert.AreEqual(5, resumed.Step);
            resumed.Train(data);
            Assert.AreEqual(12, resumed.History.Count);
            for (int i = 0; i < 12; i++)
                Assert.AreEqual(straight.History[i].Loss, resumed.History[i].Loss, 1e-6, $"step {i}");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void TimeBudgetFitsTheScheduleLengthAfterWarmup()
    {
        var options = TinyLanguageModels.Training(1_000_000);
        options.TimeBudget = TimeSpan.FromSeconds(3);
        using var trainer = new LanguageModelTrainingLoop(TinyLanguageModels.Options(FeedForwardKind.Dense), options);
        trainer.Train(TinyLanguageModels.Stream(2000, 1), TinyLanguageModels.Stream(300, 2));
        Assert.IsTrue(trainer.Options.MaxSteps < 1_000_000, "MaxSteps was not fitted to the budget");
        Assert.IsTrue(trainer.Options.MaxSteps > options.WarmupSteps, $"fitted MaxSteps {trainer.Options.MaxSteps}");
        Assert.AreEqual(trainer.Options.MaxSteps, trainer.Step, "training runs the fitted schedule to its end");
    }

    [TestMethod]
    public void CorruptCheckpointIsAClearError()
    {
        var path = Path.Combine(Path.GetTempPath(), $"peer-bad-{Guid.NewGuid():N}.bin");
        try
        {
            File.WriteAllBytes(path, new byte[] { 3, 1, 2, 3 });
            var e = Assert.Throws<InvalidDataException>(() => LanguageModelTrainingLoop.LoadCheckpoint(path));
            StringAssert.Contains(e.Message, path);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void GenerationIsDeterministicForASeed()
    {
        using var trainer =
            new LanguageModelTrainingLoop(TinyLanguageModels.Options(FeedForwardKind.Peer), TinyLanguageModels.Training(20));
        trainer.Train(TinyLanguageModels.Stream(2000, 1));
        var a = trainer.Model.Generate(new[] { 1, 2 }, 12, temperature: 1.0, seed: 5);
        var b = trainer.Model.Generate(new[] { 1, 2 }, 12, temperature: 1.0, seed: 5);
        Assert.AreEqual(12, a.Length);
        CollectionAssert.AreEqual(a, b);
        Assert.IsTrue(a.All(t => t >= 0 && t < TinyLanguageModels.Vocabulary));
    }

    [TestMethod]
    public void SequenceLongerThanContextIsRejected()
    {
        var training = TinyLanguageModels.Training(1);
        training.SequenceLength = 17;
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(
            () => new LanguageModelTrainingLoop(TinyLanguageModels.Options(FeedForwardKind.Dense), training));
        Assert.AreEqual("SequenceLength", e.ParamName);
    }
}
