namespace Microsoft.ML.Peer.Models;

/// <summary>Which block a transformer uses where its feed-forward layer would be.</summary>
public enum FeedForwardKind
{
    /// <summary>Dense FFW: W2 GELU(W1 x).</summary>
    Dense,
    /// <summary>Coarse mixture of experts, token-choice top-k with a load-balancing loss.</summary>
    MoE,
    /// <summary>Product Key Memory (Lample et al. 2019).</summary>
    ProductKeyMemory,
    /// <summary>PEER: product-key retrieval over a pool of single-neuron experts.</summary>
    Peer,
}
