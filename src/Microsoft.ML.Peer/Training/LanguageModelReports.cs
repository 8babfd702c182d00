using Microsoft.ML.Peer.Layers;

namespace Microsoft.ML.Peer.Training;

/// <summary>Progress of a training run, reported every <see cref="TrainingLoopOptions.LogEvery"/> steps.</summary>
internal sealed record LanguageModelTrainingProgress(int Step, int MaxSteps, double Loss, double LearningRate, double TokensPerSecond,
    TimeSpan Elapsed, LanguageModelEvaluationResult? Evaluation,
    UsageDiagnostics? Diagnostics = null);

/// <summary>
/// Validation loss and expert usage at one step, measured twice: with the query norms' running statistics (as scoring
/// sees the model) and with each batch's own (as training sees it).
/// </summary>
internal sealed record UsageDiagnostics(int Step, long TokensSeen, LanguageModelEvaluationResult Running,
    LanguageModelEvaluationResult Batch);

/// <summary>Validation loss, perplexity and the expert usage of every product-key layer (keyed by block index).</summary>
internal sealed record LanguageModelEvaluationResult(double Loss, double Perplexity, long Tokens,
    IReadOnlyDictionary<int, ExpertUsage> ExpertUsage);

/// <summary>One logged training loss.</summary>
internal sealed record LossPoint(int Step, double Loss);
