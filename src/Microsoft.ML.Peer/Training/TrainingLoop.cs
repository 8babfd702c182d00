using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Training;

/// <summary>
/// The core that the language-model and classifier loops share: seeding, the model and its optimizer
/// (<see cref="DenseAndSparseAdamW"/>), one optimizer step with the divergence check and clipping, which steps time
/// warm-up for a time budget, and handing the model over or freeing it. Each task adds its data, schedule length,
/// evaluation and reports on top.
/// </summary>
/// <typeparam name="TModel">The model trained.</typeparam>
internal abstract class TrainingLoop<TModel> : IDisposable where TModel : nn.Module
{
    private TrainingLoopOptions _loopOptions = null!;
    private bool _disposed;
    private bool _modelReleased;

    /// <summary>The model being trained; owned by the loop until <see cref="ReleaseModel"/>.</summary>
    public TModel Model { get; private set; } = null!;

    /// <summary>Optimizer steps taken so far.</summary>
    public int Step { get; protected set; }

    /// <summary>The optimizer of <see cref="Model"/> (dense AdamW, row-sparse AdamW for tables with sparse gradients).</summary>
    private protected DenseAndSparseAdamW Optimizer { get; private set; } = null!;

    /// <summary>
    /// Seeds TorchSharp with <paramref name="options"/>' seed, builds the model (so its initialisation follows the seed)
    /// and its optimizer. Called once, from the task's constructor, with options already validated and copied.
    /// </summary>
    /// <param name="options">The loop's own copy of the training settings.</param>
    /// <param name="createModel">Builds the model.</param>
    /// <param name="sparseTables">The names of the model's tables whose gradients are sparse rows (stepped by the row-sparse AdamW).</param>
    /// <param name="expertLearningRateScale">
    /// When given with the names of the model's PEER/PKM tables, every one of them is stepped at this multiple of the learning rate
    /// (in its own AdamW group); when null, dense expert tables stay with the other matrices.
    /// </param>
    private protected void Start(TrainingLoopOptions options, Func<TModel> createModel, Func<TModel, IEnumerable<string>> sparseTables,
        (Func<TModel, IEnumerable<string>> Tables, double Scale)? expertLearningRateScale = null)
    {
        _loopOptions = options;
        manual_seed(options.Seed);
        Model = createModel();
        Optimizer = new DenseAndSparseAdamW(Model.named_parameters(), sparseTables(Model).ToList(),
            options.LearningRate, options.Beta1, options.Beta2, options.WeightDecay,
            expertLearningRateScale?.Tables(Model).ToList(), expertLearningRateScale?.Scale ?? 1,
            unchecked((ulong)options.Seed));
    }

    /// <summary>
    /// One optimizer step at <paramref name="learningRate"/> on the loss <paramref name="loss"/> computes in training mode;
    /// returns its cross-entropy. A loss that is not finite is refused before the update, so a diverged step never
    /// reaches the weights: <paramref name="diverged"/> words the error from the loss value.
    /// </summary>
    private protected double OptimizerStep(Func<(Tensor Loss, Tensor CrossEntropy)> loss, double learningRate,
        Func<double, string> diverged)
    {
        using var scope = NewDisposeScope();
        Model.train();
        Optimizer.ZeroGrad();
        var (total, crossEntropy) = loss();
        double value = crossEntropy.item<float>();
        if (!double.IsFinite(value)) throw new InvalidOperationException(diverged(value));
        total.backward();
        Optimizer.Step(learningRate, _loopOptions.GradientClipNorm);
        Step++;
        return value;
    }

    /// <summary>
    /// Whether the step <paramref name="relativeStep"/> (counted from the start of this Train) is timed to fit a time
    /// budget: the second half of warm-up, since the first steps pay one-time allocation costs and would shorten the run.
    /// </summary>
    private protected bool TimesWarmup(int relativeStep) =>
        _loopOptions.TimeBudget is not null && relativeStep >= _loopOptions.WarmupSteps / 2 && relativeStep < _loopOptions.WarmupSteps;

    /// <summary>
    /// Frees the optimizer state and hands the model to the caller, who then owns (and disposes) it; the loop
    /// cannot train any further.
    /// </summary>
    public TModel ReleaseModel()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        FiniteWeights.Ensure(Model, "after training");
        _modelReleased = true;
        Dispose();
        return Model;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Optimizer?.Dispose();
        if (!_modelReleased) Model?.Dispose();
    }
}
