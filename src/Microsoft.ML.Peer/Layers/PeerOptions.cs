namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// Options of a PEER layer: product-key routing (see <see cref="ProductKeyOptions"/>) over a pool of
/// single-neuron experts e_i(x) = σ(u_i·x)·v_i.
/// </summary>
public sealed class PeerOptions : ProductKeyOptions
{
    /// <summary>The expert nonlinearity σ. Default GELU, as in the paper.</summary>
    public ExpertActivation ExpertActivation { get; set; } = ExpertActivation.Gelu;

    /// <summary>
    /// How the expert tables u, v and their optimizer moments are stored. Default <see cref="Layers.ExpertTablePrecision.Float32"/>;
    /// <see cref="Layers.ExpertTablePrecision.BFloat16"/> halves their memory and the bytes each retrieved row costs
    /// (docs/performance.md has the measured speed and quality). BFloat16 needs <see cref="ProductKeyOptions.SparseGradients"/>.
    /// </summary>
    public ExpertTablePrecision ExpertTablePrecision { get; set; } = ExpertTablePrecision.Float32;

    /// <summary>The tensor type of the expert tables.</summary>
    internal TorchSharp.torch.ScalarType ExpertTableType =>
        ExpertTablePrecision == ExpertTablePrecision.BFloat16 ? TorchSharp.torch.ScalarType.BFloat16 : TorchSharp.torch.ScalarType.Float32;

    /// <summary>Copies every option, so a model can own its settings.</summary>
    public override PeerOptions Clone() => (PeerOptions)MemberwiseClone();

    public override void Validate()
    {
        base.Validate();
        if (!Enum.IsDefined(ExpertActivation))
            throw new ArgumentOutOfRangeException(nameof(ExpertActivation), ExpertActivation,
                $"Unknown {nameof(ExpertActivation)} {ExpertActivation}.");
        if (!Enum.IsDefined(ExpertTablePrecision))
            throw new ArgumentOutOfRangeException(nameof(ExpertTablePrecision), ExpertTablePrecision,
                $"Unknown {nameof(ExpertTablePrecision)} {ExpertTablePrecision}.");
        // Dense AdamW would round every update of a bfloat16 table to the nearest value and lose the small ones.
        if (ExpertTablePrecision == ExpertTablePrecision.BFloat16 && !SparseGradients)
            throw new ArgumentException(
                $"{nameof(ExpertTablePrecision)} {ExpertTablePrecision} needs {nameof(SparseGradients)} = true: only the row-sparse " +
                "optimizer updates bfloat16 tables with stochastic rounding.", nameof(ExpertTablePrecision));
    }
}
