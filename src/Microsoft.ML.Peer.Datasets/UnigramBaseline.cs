namespace Microsoft.ML.Peer.Data;

/// <summary>
/// The perplexity a model that ignores context would get: token frequencies of the training split
/// with add-one smoothing over the vocabulary, evaluated on other tokens. A language model must beat it.
/// </summary>
public static class UnigramBaseline
{
    public static double Perplexity(IReadOnlyList<int> trainTokens, IReadOnlyList<int> evaluationTokens, int vocabularySize)
    {
        ArgumentNullException.ThrowIfNull(trainTokens);
        ArgumentNullException.ThrowIfNull(evaluationTokens);
        if (evaluationTokens.Count == 0) throw new ArgumentException("No evaluation tokens.", nameof(evaluationTokens));
        var counts = new long[vocabularySize];
        foreach (var t in trainTokens) counts[t]++;
        double denominator = trainTokens.Count + (double)vocabularySize;
        double logLikelihood = 0;
        foreach (var t in evaluationTokens) logLikelihood += Math.Log((counts[t] + 1) / denominator);
        return Math.Exp(-logLikelihood / evaluationTokens.Count);
    }
}
