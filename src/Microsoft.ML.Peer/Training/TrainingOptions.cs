namespace Microsoft.ML.Peer.Training;

/// <summary>Settings of <see cref="LanguageModelTrainer"/>. Defaults suit a small model on a laptop.</summary>
internal sealed class TrainingOptions
{
    /// <summary>Seed of weight initialisation and of the batch order. Default 1.</summary>
    public int Seed { get; set; } = 1;

    /// <summary>Sequences per step. Default 16.</summary>
    public int BatchSize { get; set; } = 16;

    /// <summary>Tokens per training sequence; at most the model's context length. Default 128.</summary>
    public int SequenceLength { get; set; } = 128;

    /// <summary>Peak AdamW learning rate. Default 1e-3.</summary>
    public double LearningRate { get; set; } = 1e-3;

    /// <summary>The cosine schedule ends at this fraction of the peak. Default 0.1.</summary>
    public double MinLearningRateFraction { get; set; } = 0.1;

    /// <summary>Linear warm-up steps. Default 50.</summary>
    public int WarmupSteps { get; set; } = 50;

    /// <summary>Length of the schedule: training stops after this many optimizer steps. Default 1000.</summary>
    public int MaxSteps { get; set; } = 1000;

    /// <summary>Optional wall-clock limit; training stops early when it is reached (the schedule is unchanged).</summary>
    public TimeSpan? TimeLimit { get; set; }

    /// <summary>
    /// Optional wall-clock budget for <see cref="LanguageModelTrainer.Train"/>, its evaluations included. When set,
    /// <see cref="MaxSteps"/> is refitted once, at the end of warm-up (where the schedule does not depend on it yet),
    /// from the time per step measured over the second half of warm-up, charging each evaluation token a quarter of a
    /// training token. The fitted value is kept in
    /// checkpoints, so a resumed run follows the same schedule.
    /// </summary>
    public TimeSpan? TimeBudget { get; set; }

    /// <summary>AdamW decoupled weight decay, applied to matrices and embedding tables only. Default 0.1.</summary>
    public double WeightDecay { get; set; } = 0.1;

    /// <summary>AdamW β1. Default 0.9.</summary>
    public double Beta1 { get; set; } = 0.9;

    /// <summary>AdamW β2. Default 0.95.</summary>
    public double Beta2 { get; set; } = 0.95;

    /// <summary>
    /// Learning-rate multiplier of the PEER/PKM expert tables (PKM, Memory Layers and UltraMem give values their own rate).
    /// Default 1: the tables follow the schedule like every other weight.
    /// </summary>
    public double ExpertLearningRateScale { get; set; } = 1;

    /// <summary>Global gradient-norm clip; 0 turns it off. Default 1.0.</summary>
    public double GradientClipNorm { get; set; } = 1.0;

    /// <summary>Report progress every this many steps. Default 10.</summary>
    public int LogEvery { get; set; } = 10;

    /// <summary>Evaluate on the validation tokens every this many steps; 0 evaluates only at the end. Default 0.</summary>
    public int EvaluateEvery { get; set; }

    /// <summary>At most this many validation tokens in each periodic evaluation (0: all); the final evaluation scores all. Default 0.</summary>
    public int EvaluationTokens { get; set; }

    /// <summary>
    /// Before each evaluation, re-estimate every query batch norm's running statistics from this many of the latest training
    /// batches (their exact mean and variance; see <see cref="LanguageModelEvaluation.ReestimateQueryNorm"/>); 0 (default)
    /// evaluates with BN's own running statistics.
    /// </summary>
    public int ReestimateQueryNormBatches { get; set; }

    /// <summary>
    /// Every this many steps, also measure expert usage on the validation tokens with batch statistics beside the running
    /// ones (<see cref="LanguageModelTrainer.Diagnose"/>), reported in <see cref="TrainingProgress.Diagnostics"/>; 0 (default) never.
    /// </summary>
    public int DiagnoseEvery { get; set; }

    /// <summary>Where <see cref="LanguageModelTrainer.Train"/> writes checkpoints; null writes none.</summary>
    public string? CheckpointPath { get; set; }

    /// <summary>Checkpoint every this many steps (and at the end) when <see cref="CheckpointPath"/> is set. Default 100.</summary>
    public int CheckpointEvery { get; set; } = 100;

    public TrainingOptions Clone() => (TrainingOptions)MemberwiseClone();

    /// <summary>Checks every option; the exception names the one that is wrong.</summary>
    public void Validate(int contextLength)
    {
        static void Positive(double value, string name)
        {
            if (!(value > 0)) throw new ArgumentOutOfRangeException(name, value, $"{name} must be positive; got {value}.");
        }
        Positive(BatchSize, nameof(BatchSize));
        Positive(SequenceLength, nameof(SequenceLength));
        Positive(LearningRate, nameof(LearningRate));
        Positive(MaxSteps, nameof(MaxSteps));
        Positive(ExpertLearningRateScale, nameof(ExpertLearningRateScale));
        if (SequenceLength > contextLength)
            throw new ArgumentOutOfRangeException(nameof(SequenceLength), SequenceLength, $"{nameof(SequenceLength)} ({SequenceLength}) exceeds the model's context length ({contextLength}).");
        if (MinLearningRateFraction < 0 || MinLearningRateFraction > 1)
            throw new ArgumentOutOfRangeException(nameof(MinLearningRateFraction), MinLearningRateFraction, $"{nameof(MinLearningRateFraction)} must be in [0, 1].");
        if (WarmupSteps < 0) throw new ArgumentOutOfRangeException(nameof(WarmupSteps), WarmupSteps, $"{nameof(WarmupSteps)} must not be negative.");
        if (WeightDecay < 0) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, $"{nameof(WeightDecay)} must not be negative.");
        if (GradientClipNorm < 0) throw new ArgumentOutOfRangeException(nameof(GradientClipNorm), GradientClipNorm, $"{nameof(GradientClipNorm)} must not be negative.");
        if (Beta1 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(Beta1), Beta1, $"{nameof(Beta1)} must be in [0, 1).");
        if (Beta2 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(Beta2), Beta2, $"{nameof(Beta2)} must be in [0, 1).");
        if (TimeBudget is { } budget && budget <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(TimeBudget), budget, $"{nameof(TimeBudget)} must be positive.");
        if (TimeBudget is not null && WarmupSteps < 2)
            throw new ArgumentOutOfRangeException(nameof(WarmupSteps), WarmupSteps, $"{nameof(TimeBudget)} needs at least 2 warm-up steps to measure the step time.");
        if (LogEvery <= 0) throw new ArgumentOutOfRangeException(nameof(LogEvery), LogEvery, $"{nameof(LogEvery)} must be positive.");
        if (EvaluateEvery < 0) throw new ArgumentOutOfRangeException(nameof(EvaluateEvery), EvaluateEvery, $"{nameof(EvaluateEvery)} must not be negative.");
        if (ReestimateQueryNormBatches < 0) throw new ArgumentOutOfRangeException(nameof(ReestimateQueryNormBatches), ReestimateQueryNormBatches, $"{nameof(ReestimateQueryNormBatches)} must not be negative.");
        if (DiagnoseEvery < 0) throw new ArgumentOutOfRangeException(nameof(DiagnoseEvery), DiagnoseEvery, $"{nameof(DiagnoseEvery)} must not be negative.");
        if (CheckpointPath is not null && CheckpointEvery <= 0)
            throw new ArgumentOutOfRangeException(nameof(CheckpointEvery), CheckpointEvery, $"{nameof(CheckpointEvery)} must be positive when {nameof(CheckpointPath)} is set.");
    }
}
