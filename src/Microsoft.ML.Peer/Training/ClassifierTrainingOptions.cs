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
    /// per step, learning rate 5e-3, 30 warm-up steps, 4 epochs, a report every 20 steps.
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

    /// <summary>Passes over the training texts; the schedule spans them all. Default 4.</summary>
    public int Epochs { get; set; } = 4;

    public ClassifierTrainingOptions Clone() => (ClassifierTrainingOptions)MemberwiseClone();

    /// <summary>Checks every option; the exception names the one that is wrong.</summary>
    public void Validate()
    {
        ValidateLoop();
        Positive(Epochs, nameof(Epochs));
    }
}
