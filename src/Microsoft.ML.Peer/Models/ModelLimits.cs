using Microsoft.ML.Peer.Layers;

namespace Microsoft.ML.Peer.Models;

/// <summary>
/// The largest shapes the options accept, for training and for loading alike. They sit far above anything trainable
/// on one machine (the paper's largest layer is 1024² experts) and exist so that a damaged or hostile saved model cannot
/// make loading build something absurd: options beyond them are refused before anything is allocated. The product-key
/// layer's own limits are <see cref="LayerLimits"/>.
/// </summary>
internal static class ModelLimits
{
    public const int VocabularySize = 1 << 20;
    public const int ContextLength = 1 << 16;
    public const int ModelDimension = 1 << 14;
    public const int Layers = 256;
    public const int HiddenDimension = 1 << 18;
    public const int MoeExperts = 1 << 12;
    public const int ClassCount = 1 << 16;
    public const int BigramBuckets = 1 << 24;
    /// <summary>The linear bag's token and pair tables together: 2^28 weights (1 GiB).</summary>
    public const long LinearBagWeights = 1L << 28;
    /// <summary>The most models a classifier ensemble holds (each one more forward pass per text).</summary>
    public const int EnsembleSize = 32;
}
