namespace Microsoft.ML.Peer.Models;

/// <summary>How a <see cref="TransformerTextClassifier"/> turns the vectors of a text's tokens into one vector.</summary>
public enum TextPooling
{
    /// <summary>The mean over the real tokens.</summary>
    Mean,

    /// <summary>The largest value of each feature over the real tokens: a few telling tokens are not diluted by a long text.</summary>
    Max,

    /// <summary>The mean and the maximum side by side, projected back to the model's width.</summary>
    MeanAndMax,

    /// <summary>
    /// A weighted mean whose weights are the softmax of each token vector's dot product with a learned query: the model learns
    /// which tokens to read. The query starts at zero, so training starts from <see cref="Mean"/>.
    /// </summary>
    Attention,
}
