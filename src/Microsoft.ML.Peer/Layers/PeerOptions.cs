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
    /// Which kernels compute the experts. Default <see cref="PeerKernels.Auto"/>: the native fused kernels of
    /// Peer.Native when they load and the tensors are float32 on the CPU, else composed TorchSharp operations.
    /// Both give the same outputs and gradients (to float rounding).
    /// </summary>
    public PeerKernels Kernels { get; set; } = PeerKernels.Auto;

    /// <summary>Copies every option, so a model can own its settings.</summary>
    public override PeerOptions Clone() => (PeerOptions)MemberwiseClone();

    public override void Validate()
    {
        base.Validate();
        if (!Enum.IsDefined(ExpertActivation))
            throw new ArgumentOutOfRangeException(nameof(ExpertActivation), ExpertActivation, $"Unknown {nameof(ExpertActivation)} {ExpertActivation}.");
        if (!Enum.IsDefined(Kernels))
            throw new ArgumentOutOfRangeException(nameof(Kernels), Kernels, $"Unknown {nameof(Kernels)} {Kernels}.");
    }
}
