namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// The largest product-key layer the options accept, for training and for loading alike (the model's own limits are in
/// <c>ModelLimits</c>): far above anything trainable on one machine, so that a damaged or hostile saved model cannot make
/// loading build something absurd. Checked with <see cref="OptionChecks.AtMost"/>.
/// </summary>
internal static class LayerLimits
{
    /// <summary>8192² = 67,108,864 experts: 64 times the paper's million.</summary>
    public const int Experts = 8192 * 8192;
    public const int RetrievalHeads = 1024;
    public const int KeyDimension = 1 << 14;
}
