using static Microsoft.ML.Peer.Layers.OptionChecks;

namespace Microsoft.ML.Peer.Training;

/// <summary>
/// Settings of <see cref="TextClassifierTrainingLoop"/>. The defaults are the recommended configuration, measured on
/// SpamAssassin with <c>TextClassifierOptions</c>' defaults (accuracy and fit times: docs/ml-net-plugin.md).
/// </summary>
/// <remarks>The settings shared with the language model (seed, AdamW, schedule, clipping, time budget) are on
/// <see cref="TrainingLoopOptions"/>.</remarks>
internal sealed class ClassifierTrainingOptions : TrainingLoopOptions
{
    /// <summary>
    /// The recommended training settings, stated here once (the ML.NET options take their defaults from them): 32 texts
    /// per step (fewer for a few hundred texts: <see cref="MinimumStepsPerEpoch"/>), learning rate 5e-3, 30 warm-up steps, 4 epochs,
    /// a report every 20 steps.
    /// </summary>
    /// <remarks>
    /// With <see cref="TrainingLoopOptions.TimeBudget"/>, the steps that fit are counted from the time per padded token
    /// measured over the second half of warm-up and the planned batches' padded tokens, each validation token charged a
    /// third of a training token. It never exceeds <see cref="Epochs"/> passes; the last pass may then be partial.
    /// </remarks>
    public ClassifierTrainingOptions()
    {
        BatchSize = 32;
        LearningRate = 5e-3;
        WarmupSteps = 30;
        LogEvery = 20;
    }

    /// <summary>Passes over the training texts at most; the schedule spans them all. Default 4.</summary>
    public int Epochs { get; set; } = 4;

    /// <summary>
    /// With fewer than <see cref="TrainingLoopOptions.BatchSize"/> × this many training texts, batches shrink (to no fewer than
    /// <see cref="SmallestBatch"/> texts) so that an epoch still takes about this many optimizer steps: 848 long pages in
    /// batches of 32 gave a fold 16 steps an epoch, most of them inside warm-up. 0 = always <see cref="TrainingLoopOptions.BatchSize"/>.
    /// Default 64, chosen by cross-validation on the training parts of the classifier suite (docs/ml-net-plugin.md, "Fifth round").
    /// </summary>
    public int MinimumStepsPerEpoch { get; set; } = 64;

    /// <summary>The fewest texts a batch shrinks to for <see cref="MinimumStepsPerEpoch"/>: 8 (never more than
    /// <see cref="TrainingLoopOptions.BatchSize"/>).</summary>
    public const int SmallestBatch = 8;

    /// <summary>The texts per step for <paramref name="rows"/> training texts: <see cref="TrainingLoopOptions.BatchSize"/>, or fewer so
    /// that an epoch has <see cref="MinimumStepsPerEpoch"/> steps, down to <see cref="SmallestBatch"/>.</summary>
    public int BatchSizeFor(int rows) => MinimumStepsPerEpoch == 0
        ? BatchSize
        : Math.Clamp(rows / MinimumStepsPerEpoch, Math.Min(SmallestBatch, BatchSize), BatchSize);

    /// <summary>
    /// With validation texts: stop after this many epochs in a row without a lower validation loss, and keep the weights of
    /// the epoch with the lowest. 0 trains every epoch and keeps the last weights. Default 2.
    /// </summary>
    public int EarlyStoppingPatience { get; set; } = 2;

    /// <summary>With validation texts: fit the scores' temperature to them after training (see
    /// <c>TextClassifierOptions.ScoreTemperature</c>). Default true.</summary>
    public bool FitScoreTemperature { get; set; } = true;

    /// <summary>
    /// Judge, keep and return a running average of the weights over the steps (<see cref="WeightAverage"/>) instead of the last
    /// step's; training itself goes on from the live weights. Default true.
    /// </summary>
    public bool AverageWeights { get; set; } = true;

    public ClassifierTrainingOptions Clone() => (ClassifierTrainingOptions)MemberwiseClone();

    /// <summary>A copy that trains exactly <paramref name="epochs"/> epochs in batches of <paramref name="batchSize"/> texts: no early
    /// stopping, no temperature fit, no shrinking of the batches.</summary>
    public ClassifierTrainingOptions CloneWith(int epochs, int batchSize)
    {
        var copy = Clone();
        copy.Epochs = epochs;
        copy.BatchSize = batchSize;
        copy.MinimumStepsPerEpoch = 0;
        copy.EarlyStoppingPatience = 0;
        copy.FitScoreTemperature = false;
        return copy;
    }

    /// <summary>Checks every option; the exception names the one that is wrong.</summary>
    public void Validate()
    {
        ValidateLoop();
        Positive(Epochs, nameof(Epochs));
        if (MinimumStepsPerEpoch < 0)
            throw new ArgumentOutOfRangeException(nameof(MinimumStepsPerEpoch), MinimumStepsPerEpoch,
                $"{nameof(MinimumStepsPerEpoch)} must be 0 (off) or more; got {MinimumStepsPerEpoch}.");
        if (EarlyStoppingPatience < 0)
            throw new ArgumentOutOfRangeException(nameof(EarlyStoppingPatience), EarlyStoppingPatience,
                $"{nameof(EarlyStoppingPatience)} must be 0 (off) or more; got {EarlyStoppingPatience}.");
    }
}
