using static Microsoft.ML.Peer.Layers.OptionChecks;

namespace Microsoft.ML.Peer.Training;

/// <summary>Settings of <see cref="LanguageModelTrainingLoop"/>. Defaults suit a small model on a laptop.</summary>
/// <remarks>The settings shared with the classifier (seed, AdamW, schedule, clipping, time budget) are on
/// <see cref="TrainingLoopOptions"/>.</remarks>
internal sealed class LanguageModelTrainingOptions : TrainingLoopOptions
{
    /// <summary>
    /// The recommended training settings of the language model, stated here once (the ML.NET options take their defaults
    /// from them): 16 sequences per step, learning rate 1e-3, 20 warm-up steps, a report every 10 steps.
    /// </summary>
    public LanguageModelTrainingOptions()
    {
        BatchSize = 16;
        LearningRate = 1e-3;
        WarmupSteps = 20;
        LogEvery = 10;
    }

    /// <summary>Tokens per training sequence; at most the model's context length. Default 128.</summary>
    public int SequenceLength { get; set; } = 128;

    /// <summary>Length of the schedule: training stops after this many optimizer steps. Default 1000.</summary>
    public int MaxSteps { get; set; } = 1000;

    /// <summary>Optional wall-clock limit; training stops early when it is reached (the schedule is unchanged).</summary>
    /// <remarks>
    /// With <see cref="TrainingLoopOptions.TimeBudget"/>, <see cref="MaxSteps"/> is what is refitted, from the time per step,
    /// charging each evaluation token a quarter of a training token; the fitted value is kept in checkpoints, so a resumed
    /// run follows the same schedule.
    /// </remarks>
    public TimeSpan? TimeLimit { get; set; }

    /// <summary>
    /// Learning-rate multiplier of the PEER/PKM expert tables (PKM, Memory Layers and UltraMem give values their own rate).
    /// Default 1: the tables follow the schedule like every other weight.
    /// </summary>
    public double ExpertLearningRateScale { get; set; } = 1;

    /// <summary>Evaluate on the validation tokens every this many steps; 0 evaluates only at the end. Default 0.</summary>
    public int EvaluateEvery { get; set; }

    /// <summary>At most this many validation tokens in each periodic evaluation (0: all); the final evaluation scores all. Default
    /// 0.</summary>
    public int EvaluationTokens { get; set; }

    /// <summary>
    /// Before each evaluation, re-estimate every query batch norm's running statistics from this many of the latest training
    /// batches (their exact mean and variance; see <see cref="LanguageModelEvaluation.ReestimateQueryNorm"/>); 0 (default)
    /// evaluates with BN's own running statistics.
    /// </summary>
    public int ReestimateQueryNormBatches { get; set; }

    /// <summary>
    /// Every this many steps, also measure expert usage on the validation tokens with batch statistics beside the running
    /// ones (<see cref="LanguageModelTrainingLoop.Diagnose"/>), reported in <see cref="LanguageModelTrainingProgress.Diagnostics"/>; 0
    /// (default) never.
    /// </summary>
    public int DiagnoseEvery { get; set; }

    /// <summary>Where <see cref="LanguageModelTrainingLoop.Train"/> writes checkpoints; null writes none.</summary>
    public string? CheckpointPath { get; set; }

    /// <summary>Checkpoint every this many steps (and at the end) when <see cref="CheckpointPath"/> is set. Default 100.</summary>
    public int CheckpointEvery { get; set; } = 100;

    public LanguageModelTrainingOptions Clone() => (LanguageModelTrainingOptions)MemberwiseClone();

    /// <summary>Checks every option; the exception names the one that is wrong.</summary>
    public void Validate(int contextLength)
    {
        ValidateLoop();
        Positive(SequenceLength, nameof(SequenceLength));
        Positive(MaxSteps, nameof(MaxSteps));
        Positive(ExpertLearningRateScale, nameof(ExpertLearningRateScale));
        if (SequenceLength > contextLength)
            throw new ArgumentOutOfRangeException(nameof(SequenceLength), SequenceLength,
                $"{nameof(SequenceLength)} ({SequenceLength}) exceeds the model's context length ({contextLength}).");
        if (EvaluateEvery < 0)
            throw new ArgumentOutOfRangeException(nameof(EvaluateEvery), EvaluateEvery, $"{nameof(EvaluateEvery)} must not be negative.");
        if (ReestimateQueryNormBatches < 0)
            throw new ArgumentOutOfRangeException(nameof(ReestimateQueryNormBatches), ReestimateQueryNormBatches,
                $"{nameof(ReestimateQueryNormBatches)} must not be negative.");
        if (DiagnoseEvery < 0)
            throw new ArgumentOutOfRangeException(nameof(DiagnoseEvery), DiagnoseEvery, $"{nameof(DiagnoseEvery)} must not be negative.");
        if (CheckpointPath is not null && CheckpointEvery <= 0)
            throw new ArgumentOutOfRangeException(nameof(CheckpointEvery), CheckpointEvery,
                $"{nameof(CheckpointEvery)} must be positive when {nameof(CheckpointPath)} is set.");
    }
}
