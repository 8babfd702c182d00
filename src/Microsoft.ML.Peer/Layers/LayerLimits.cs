namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// The largest product-key layer the options accept, for training and for loading alike (the model's own limits are in
/// <c>ModelLimits</c>): far above anything trainable on one machine, so that a damaged or hostile saved model cannot make
/// loading build something absurd.
/// </summary>
internal static class LayerLimits
{
    /// <summary>8192² = 67,108,864 experts: 64 times the paper's million.</summary>
    public const int Experts = 8192 * 8192;
    public const int RetrievalHeads = 1024;
    public const int KeyDimension = 1 << 14;

    /// <summary>Throws an <see cref="ArgumentOutOfRangeException"/> naming <paramref name="name"/> when <paramref name="value"/> exceeds
    /// <paramref name="limit"/>.</summary>
    public static void AtMost(int value, int limit, string name)
    {
        if (value > limit)
            throw new ArgumentOutOfRangeException(name, value, $"{name} must be at most {limit:N0}; got {value:N0}.");
    }
}
