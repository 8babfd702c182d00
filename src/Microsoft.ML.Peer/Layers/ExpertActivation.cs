namespace Microsoft.ML.Peer.Layers;

/// <summary>The nonlinearity σ of a single-neuron expert σ(u·x)·v.</summary>
public enum ExpertActivation
{
    Gelu,
    Relu,
}
