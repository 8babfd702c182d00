namespace Microsoft.ML.Peer.Models;

/// <summary>
/// Shape of a <see cref="TransformerTextClassifier"/>: the shared transformer settings (<see cref="TransformerOptions"/>)
/// plus the number of classes and the padding token. The constructor's defaults are the recommended SpamAssassin
/// configuration (see <see cref="Recommended"/>); <see cref="TransformerOptions.VocabularySize"/> and
/// <see cref="ClassCount"/> must be set.
/// </summary>
public sealed class TextClassifierOptions : TransformerOptions
{
    public TextClassifierOptions()
    {
        ContextLength = RecommendedContextLength;
        ModelDimension = 128;
        Layers = 1;
        AttentionHeads = 4;
        Peer = new() { Experts = 128 * 128, Heads = 4, TopK = 8, KeyDimension = 64, SparseGradients = true };
    }

    /// <summary>The recommended <see cref="TransformerOptions.ContextLength"/> for whole mails, headers included: 256 tokens.</summary>
    public const int RecommendedContextLength = 256;

    /// <summary>Number of classes C; labels are 0..C−1. Required, at least 2.</summary>
    public int ClassCount { get; set; }

    /// <summary>
    /// The token id that fills a text up to the batch length; positions holding it are masked out of attention,
    /// the feed-forward and pooling. Must be an id that real texts never contain (the ML.NET layer passes
    /// <c>CompactTokenizer.EndOfTextId</c>, which <c>Encode</c> never produces). Default 0.
    /// </summary>
    public int PaddingId { get; set; }

    /// <summary>
    /// The recommended configuration for <paramref name="vocabularySize"/> and <paramref name="classCount"/>, the
    /// constructor's defaults: context 256, d = 128, one bidirectional block whose FFW is PEER with N = 128², h = 4,
    /// k = 8, d_key = 64, sparse gradients. See <c>ClassifierTrainingOptions</c> for the matching training settings.
    /// </summary>
    public static TextClassifierOptions Recommended(int vocabularySize, int classCount, int paddingId) =>
        new() { VocabularySize = vocabularySize, ClassCount = classCount, PaddingId = paddingId };

    /// <summary>A deep copy, so a model owns its settings.</summary>
    public TextClassifierOptions Clone() => (TextClassifierOptions)CloneTransformer();

    /// <summary>Checks every option; the exception names the one that is wrong.</summary>
    public void Validate()
    {
        // Zero blocks is a bag of embeddings: mean-pooled token + position embeddings into the linear head.
        ValidateTransformer(minimumLayers: 0);
        if (ClassCount < 2)
            throw new ArgumentOutOfRangeException(nameof(ClassCount), ClassCount, $"{nameof(ClassCount)} must be at least 2; got {ClassCount}.");
        if (PaddingId < 0 || PaddingId >= VocabularySize)
            throw new ArgumentOutOfRangeException(nameof(PaddingId), PaddingId, $"{nameof(PaddingId)} must be a token id in 0..{nameof(VocabularySize)} − 1 ({VocabularySize - 1}); got {PaddingId}.");
    }
}
