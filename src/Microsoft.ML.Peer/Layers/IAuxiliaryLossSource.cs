using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Layers;

/// <summary>A layer that adds a term to the training loss (e.g. MoE load balancing).</summary>
public interface IAuxiliaryLossSource
{
    /// <summary>The term computed by the last forward pass in training mode, or null.</summary>
    Tensor? AuxiliaryLoss { get; }
}
