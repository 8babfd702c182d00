namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// Options of a PEER layer: product-key routing (see <see cref="ProductKeyOptions"/>) over a pool of
/// single-neuron experts e_i(x) = σ(u_i·x)·v_i.
/// </summary>
public sealed class PeerOptions : ProductKeyOptions
{
    /// <summary>The expert nonlinearity σ. Default GELU, as in the paper.</summary>
    public ExpertActivation ExpertActivation { get; set; } = ExpertActivation.Gelu;

    /// <summary>Copies every option, so a model can own its settings.</summary>
    public override PeerOptions Clone() => (PeerOptions)MemberwiseClone();

    public override void Validate()
    {
        base.Validate();
        if (!Enum.IsDefined(ExpertActivation))
            throw new ArgumentOutOfRangeException(nameof(ExpertActivation), ExpertActivation,
                $"Unknown {nameof(ExpertActivation)} {ExpertActivation}.");
    }
}
