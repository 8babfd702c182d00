namespace Microsoft.ML.Peer.Training;

/// <summary>
/// Temperature scaling (Guo et al., 2017): the one temperature T that minimises the cross-entropy of softmax(logits / T) on
/// held-out texts. The mean cross-entropy is convex in 1/T, so a golden-section search over log T finds the minimum; the
/// argmax, and so every prediction, is unchanged.
/// </summary>
/// <remarks>
/// The targets are smoothed as Platt (1999) smooths his: the true class gets 1 − 1/(n + 2) of n held-out texts, the others share
/// the rest. Without it, a small validation set the model gets entirely right drives T to its lower bound, and scores on new
/// texts become exactly 0 and 1.
/// </remarks>
internal static class ScoreTemperatureFit
{
    // T in [1/64, 64]: beyond, either every score is one-hot or all are nearly uniform; neither is a calibration.
    private const double LogLow = -4.1588830833596715, LogHigh = 4.1588830833596715;

    /// <summary>The fitted temperature of <paramref name="logits"/> [text][class] with true classes <paramref name="labels"/>.</summary>
    public static double Fit(IReadOnlyList<float[]> logits, IReadOnlyList<int> labels)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(labels);
        if (logits.Count != labels.Count || logits.Count == 0)
            throw new ArgumentException($"Temperature fitting needs one label per text and at least one text; got {logits.Count} texts and {labels.Count} labels.");
        double golden = (Math.Sqrt(5) - 1) / 2;
        double a = LogLow, b = LogHigh;
        double c = b - golden * (b - a), d = a + golden * (b - a);
        double smoothing = 1.0 / (logits.Count + 2);
        double Loss(double logT) => CrossEntropy(logits, labels, Math.Exp(logT), smoothing);
        double fc = Loss(c), fd = Loss(d);
        for (int i = 0; i < 60; i++)
        {
            if (fc <= fd) { b = d; d = c; fd = fc; c = b - golden * (b - a); fc = Loss(c); }
            else { a = c; c = d; fc = fd; d = a + golden * (b - a); fd = Loss(d); }
        }
        return Math.Exp((a + b) / 2);
    }

    /// <summary>
    /// Whether <paramref name="temperature"/>, fitted to another model, may serve the model whose <paramref name="logits"/> these
    /// are. A temperature of 1 or more only softens the scores towards uniform, which bounds the harm, so it always may. One
    /// below 1 sharpens them, which turns small wrong margins into confident mistakes; it may only where it does not raise the
    /// cross-entropy on <paramref name="labels"/> above what no temperature gives. The trainer asks this of its refit on the
    /// held-out rows, which the refit has trained on, so the test is lenient: it fails where the model has not learned the task.
    /// </summary>
    public static bool Transfers(IReadOnlyList<float[]> logits, IReadOnlyList<int> labels, double temperature) =>
        temperature >= 1 || CrossEntropy(logits, labels, temperature) <= CrossEntropy(logits, labels, 1);

    /// <summary>Mean cross-entropy of softmax(logits / <paramref name="temperature"/>) against targets that give the true class
    /// 1 − <paramref name="smoothing"/> and each other class an equal share of <paramref name="smoothing"/>.</summary>
    public static double CrossEntropy(IReadOnlyList<float[]> logits, IReadOnlyList<int> labels, double temperature, double smoothing = 0)
    {
        double total = 0;
        for (int i = 0; i < logits.Count; i++)
        {
            var z = logits[i];
            double max = double.NegativeInfinity;
            foreach (var v in z) max = Math.Max(max, v / temperature);
            double sum = 0, all = 0;
            foreach (var v in z) { sum += Math.Exp(v / temperature - max); all += v / temperature; }
            double logNormaliser = Math.Log(sum) + max, own = z[labels[i]] / temperature;
            total += (1 - smoothing) * (logNormaliser - own);
            if (smoothing > 0) total += smoothing / (z.Length - 1) * ((z.Length - 1) * logNormaliser - (all - own));
        }
        return total / logits.Count;
    }
}
