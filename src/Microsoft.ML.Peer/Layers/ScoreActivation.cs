namespace Microsoft.ML.Peer.Layers;

/// <summary>How a head's top-k retrieval scores become router weights g.</summary>
public enum ScoreActivation
{
    /// <summary>Softmax over the head's top-k scores (the paper's default).</summary>
    Softmax,
    /// <summary>Independent sigmoid of each score.</summary>
    Sigmoid,
}
