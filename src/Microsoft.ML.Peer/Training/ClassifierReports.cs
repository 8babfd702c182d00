namespace Microsoft.ML.Peer.Training;

/// <summary>Progress of a classifier run, reported every <see cref="TrainingLoopOptions.LogEvery"/> steps (Loss: mean since the last
/// report; Epoch: 1-based).</summary>
internal sealed record ClassifierProgress(int Step, int TotalSteps, int Epoch, double Loss, double LearningRate, double TokensPerSecond,
    TimeSpan Elapsed);

/// <summary>
/// One pass over the training texts (Epoch: 1-based; Steps: optimizer steps so far; PlannedSteps: the step the whole fit
/// is planned to end at, so progress can count the time left for every epoch). TrainLoss is the mean training
/// cross-entropy of the pass; the validation fields are null without validation texts. TokensPerSecond counts real
/// (unpadded) training tokens over the pass; Elapsed is the time since training began.
/// </summary>
internal sealed record ClassifierEpochReport(int Epoch, int Steps, int PlannedSteps, double TrainLoss, double? ValidationLoss,
    double? ValidationAccuracy, double TokensPerSecond, TimeSpan Elapsed);

/// <summary>Mean cross-entropy and accuracy of a labelled set of texts.</summary>
internal sealed record ClassifierEvaluation(double Loss, double Accuracy, int Count)
{
    /// <summary>The cross-entropy of softmax(logits / <paramref name="temperature"/>) and the accuracy of the logits' argmax.</summary>
    public static ClassifierEvaluation Of(IReadOnlyList<float[]> logits, IReadOnlyList<int> labels, double temperature)
    {
        int correct = 0;
        for (int i = 0; i < logits.Count; i++)
        {
            var z = logits[i];
            int best = 0;
            for (int c = 1; c < z.Length; c++) if (z[c] > z[best]) best = c;
            if (best == labels[i]) correct++;
        }
        return new ClassifierEvaluation(ScoreTemperatureFit.CrossEntropy(logits, labels, temperature),
            (double)correct / Math.Max(1, logits.Count), logits.Count);
    }
}

/// <summary>What <see cref="TextClassifierTrainingLoop.Train"/> did: one report per (possibly partial) pass, the steps taken, the
/// time, the epoch whose weights the model kept (the best on validation with early stopping, else the last) and the score
/// temperature fitted on the validation texts (null when none was), and the texts per step.</summary>
internal sealed record ClassifierTrainingResult(IReadOnlyList<ClassifierEpochReport> Epochs, int Steps, TimeSpan Elapsed, int KeptEpoch,
    double? ScoreTemperature, int BatchSize);
