namespace Microsoft.ML.Peer.Training;

/// <summary>Linear warm-up to the peak, then cosine decay to a floor at the last step.</summary>
internal static class LearningRateSchedule
{
    /// <summary>The learning rate of optimizer step <paramref name="step"/> (0-based).</summary>
    public static double At(int step, double peak, int warmupSteps, int totalSteps, double minFraction)
    {
        if (warmupSteps > 0 && step < warmupSteps) return peak * (step + 1) / warmupSteps;
        int decaySteps = Math.Max(1, totalSteps - warmupSteps);
        double progress = Math.Clamp((double)(step - warmupSteps) / decaySteps, 0, 1);
        double floor = peak * minFraction;
        return floor + (peak - floor) * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }
}
