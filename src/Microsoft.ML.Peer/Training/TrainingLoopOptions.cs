using static Microsoft.ML.Peer.Layers.OptionChecks;

namespace Microsoft.ML.Peer.Training;

/// <summary>
/// The settings every training loop here shares (seed, batch size, AdamW, schedule, clipping, time budget, logging), with
/// their checks. The task's options add their own and set the defaults that differ per task in their constructor;
/// the ones set here are the same for both.
/// </summary>
internal abstract class TrainingLoopOptions
{
    /// <summary>Seed of weight initialisation and of the batch order. Default 1.</summary>
    public int Seed { get; set; } = 1;

    /// <summary>Sequences (language model) or texts (classifier) per step; each task sets its default.</summary>
    public int BatchSize { get; set; }

    /// <summary>Peak AdamW learning rate; each task sets its default.</summary>
    public double LearningRate { get; set; }

    /// <summary>The cosine schedule ends at this fraction of the peak. Default 0.1.</summary>
    public double MinLearningRateFraction { get; set; } = 0.1;

    /// <summary>Linear warm-up steps; each task sets its default.</summary>
    public int WarmupSteps { get; set; }

    /// <summary>
    /// Optional wall-clock budget for the loop's Train, its evaluations included. When set, the schedule's length is
    /// refitted once, at the end of warm-up (where the schedule does not depend on it yet), from the time measured over the
    /// second half of warm-up; each task says how it charges evaluation.
    /// </summary>
    public TimeSpan? TimeBudget { get; set; }

    /// <summary>AdamW decoupled weight decay, applied to matrices, tables and expert rows only. Default 0.1.</summary>
    public double WeightDecay { get; set; } = 0.1;

    /// <summary>AdamW β1. Default 0.9.</summary>
    public double Beta1 { get; set; } = 0.9;

    /// <summary>AdamW β2. Default 0.95.</summary>
    public double Beta2 { get; set; } = 0.95;

    /// <summary>Global gradient-norm clip; 0 turns it off. Default 1.0.</summary>
    public double GradientClipNorm { get; set; } = 1.0;

    /// <summary>Report progress every this many steps; each task sets its default.</summary>
    public int LogEvery { get; set; }

    /// <summary>Checks the shared settings; the exception names the one that is wrong.</summary>
    protected void ValidateLoop()
    {
        Positive(BatchSize, nameof(BatchSize));
        Positive(LearningRate, nameof(LearningRate));
        Positive(LogEvery, nameof(LogEvery));
        if (MinLearningRateFraction is < 0 or > 1)
            throw new ArgumentOutOfRangeException(nameof(MinLearningRateFraction), MinLearningRateFraction,
                $"{nameof(MinLearningRateFraction)} must be in [0, 1].");
        if (WarmupSteps < 0)
            throw new ArgumentOutOfRangeException(nameof(WarmupSteps), WarmupSteps, $"{nameof(WarmupSteps)} must not be negative.");
        if (WeightDecay < 0)
            throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, $"{nameof(WeightDecay)} must not be negative.");
        if (GradientClipNorm < 0)
            throw new ArgumentOutOfRangeException(nameof(GradientClipNorm), GradientClipNorm,
                $"{nameof(GradientClipNorm)} must not be negative.");
        if (Beta1 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(Beta1), Beta1, $"{nameof(Beta1)} must be in [0, 1).");
        if (Beta2 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(Beta2), Beta2, $"{nameof(Beta2)} must be in [0, 1).");
        CheckTimeBudget(TimeBudget, WarmupSteps);
    }

    /// <summary>
    /// A time budget must be positive, and the schedule is fitted to it from the second half of warm-up, which then
    /// needs at least 2 steps. The one check of it, for these options and the ML.NET trainers' alike.
    /// </summary>
    internal static void CheckTimeBudget(TimeSpan? budget, int warmupSteps)
    {
        if (budget is { } b && b <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException("TimeBudget", b, "TimeBudget must be positive.");
        if (budget is not null && warmupSteps < 2)
            throw new ArgumentOutOfRangeException("WarmupSteps", warmupSteps,
                "TimeBudget needs at least 2 warm-up steps to measure the step time.");
    }
}
