using static Microsoft.ML.Peer.Layers.OptionChecks;

namespace Microsoft.ML.Peer.Models;

/// <summary>
/// Shape of a <see cref="TransformerTextClassifier"/>: the shared transformer settings (<see cref="TransformerOptions"/>)
/// plus the number of classes and the padding token. The constructor's defaults are the recommended configuration (see
/// <see cref="Recommended"/>) except <see cref="Pooling"/>, whose default reads older saved models as they were;
/// <see cref="TransformerOptions.VocabularySize"/> and <see cref="ClassCount"/> must be set.
/// </summary>
public sealed class TextClassifierOptions : TransformerOptions
{
    public TextClassifierOptions()
    {
        ContextLength = RecommendedContextLength;
        ModelDimension = 128;
        Layers = 0;
        AttentionHeads = 4;
        UseProductKeys(experts: 128 * 128, heads: 4, topK: 8, keyDimension: 64);
        FeedForward = RecommendedFeedForward;
    }

    /// <summary>
    /// The classifier's feed-forward over the pooled text vector: a product-key memory (PKM), chosen by cross-validation on the
    /// training parts of the classifier suite (docs/ml-net-plugin.md, "Fourth round"). With one retrieval per text rather than
    /// per token, PKM's value table fitted the suite's few thousand texts better than PEER's single-neuron experts, in less
    /// time. Models saved with another kind name it and read as they were.
    /// </summary>
    public const FeedForwardKind RecommendedFeedForward = FeedForwardKind.ProductKeyMemory;

    /// <summary>
    /// The recommended <see cref="TransformerOptions.ContextLength"/> for whole mails, headers included: 512 tokens (the
    /// headers and the start of the body). 1024 was not better on SpamAssassin and costs twice the time.
    /// </summary>
    public const int RecommendedContextLength = 512;

    /// <summary>
    /// How the token vectors of a text become one vector. Default <see cref="TextPooling.Mean"/>, so that models saved before it
    /// existed read as they were; <see cref="Recommended"/> and the trainer use <see cref="RecommendedPooling"/>.
    /// </summary>
    public TextPooling Pooling { get; set; }

    /// <summary>The recommended <see cref="Pooling"/>: <see cref="TextPooling.Attention"/>, chosen by cross-validation on the training
    /// parts of the classifier suite (docs/ml-net-plugin.md, "Choosing the defaults").</summary>
    public const TextPooling RecommendedPooling = TextPooling.Attention;

    /// <summary>
    /// Buckets of the hashed token-pair table of the bag of embeddings (<see cref="TransformerOptions.Layers"/> = 0): each pair of
    /// neighbouring tokens adds its bucket's embedding to the text's vector, so the bag sees some word order (fastText's hashed
    /// n-grams). 0 = none; must be 0 when the model has blocks. Default 0: across the classifier suite the pairs did not pay for
    /// their table (docs/ml-net-plugin.md, "Choosing the defaults").
    /// </summary>
    public int BigramBuckets { get; set; }

    /// <summary>
    /// Fraction of a text's tokens hidden from the model at random in each training step (never in evaluation): a bag
    /// of tokens otherwise memorises the few tokens that identify each training text. Default 0.
    /// </summary>
    public double TokenDropout { get; set; }

    /// <summary>
    /// Label smoothing of the training cross-entropy (0 = none). Default 0.1, chosen by cross-validation on the training parts
    /// of the classifier suite (docs/ml-net-plugin.md, "Choosing the defaults").
    /// </summary>
    public double LabelSmoothing { get; set; } = 0.1;

    /// <summary>
    /// The temperature the logits are divided by before the softmax that gives the class probabilities (Score). It
    /// changes no prediction, only how confident the probabilities are. The trainer fits it on its validation part
    /// (docs/ml-net-plugin.md, "Early stopping and calibration"); models saved before it existed read as 1. Default 1.
    /// </summary>
    public double ScoreTemperature { get; set; } = 1;

    /// <summary>Number of classes C; labels are 0..C−1. Required, at least 2 and at most 65,536.</summary>
    public int ClassCount { get; set; }

    /// <summary>
    /// The token id that fills a text up to the batch length; positions holding it are masked out of attention,
    /// the feed-forward and pooling. Must be an id that real texts never contain (the ML.NET layer passes
    /// <c>CompactTokenizer.EndOfTextId</c>, which <c>Encode</c> never produces). Default 0.
    /// </summary>
    public int PaddingId { get; set; }

    /// <summary>
    /// The recommended configuration for <paramref name="vocabularySize"/> and <paramref name="classCount"/>: the constructor's
    /// defaults (context 512, d = 128, no transformer blocks, so a bag of embeddings, and one product-key memory layer over the
    /// pooled text vector with N = 128², h = 4, k = 8, d_key = 64 and sparse gradients) with <see cref="RecommendedPooling"/>. See
    /// <c>ClassifierTrainingOptions</c> for the matching training settings.
    /// </summary>
    /// <remarks>
    /// Why no blocks: attention's cost grows with the context, and at the 512 tokens whole mails need, blocks were both
    /// slower and less accurate than the bag of embeddings (measurements: docs/ml-net-plugin.md, "Why the classifier has
    /// no attention blocks by default").
    /// </remarks>
    public static TextClassifierOptions Recommended(int vocabularySize, int classCount, int paddingId) =>
        new() { VocabularySize = vocabularySize, ClassCount = classCount, PaddingId = paddingId, Pooling = RecommendedPooling };

    /// <summary>
    /// A classifier with <paramref name="languageModel"/>'s embeddings and blocks (vocabulary, context, width, depth,
    /// feed-forwards), so it can start from that language model's weights; the other settings are the defaults.
    /// </summary>
    internal static TextClassifierOptions LikeLanguageModel(LanguageModelOptions languageModel, int classCount, int paddingId)
    {
        var options = new TextClassifierOptions { ClassCount = classCount, PaddingId = paddingId };
        options.CopyTransformerSettingsFrom(languageModel);
        return options;
    }

    /// <summary>A deep copy, so a model owns its settings.</summary>
    public TextClassifierOptions Clone() => (TextClassifierOptions)CloneTransformer();

    /// <summary>Checks every option; the exception names the one that is wrong.</summary>
    public void Validate()
    {
        // Zero blocks is a bag of embeddings: mean-pooled token + position embeddings into the linear head.
        ValidateTransformer(minimumLayers: 0);
        if (ClassCount < 2)
            throw new ArgumentOutOfRangeException(nameof(ClassCount), ClassCount,
                $"{nameof(ClassCount)} must be at least 2; got {ClassCount}.");
        AtMost(ClassCount, ModelLimits.ClassCount, nameof(ClassCount));
        if (TokenDropout is < 0 or >= 1 || double.IsNaN(TokenDropout))
            throw new ArgumentOutOfRangeException(nameof(TokenDropout), TokenDropout,
                $"{nameof(TokenDropout)} must be in [0, 1); got {TokenDropout}.");
        if (LabelSmoothing is < 0 or >= 1 || double.IsNaN(LabelSmoothing))
            throw new ArgumentOutOfRangeException(nameof(LabelSmoothing), LabelSmoothing,
                $"{nameof(LabelSmoothing)} must be in [0, 1); got {LabelSmoothing}.");
        if (!(ScoreTemperature > 0) || !double.IsFinite(ScoreTemperature))
            throw new ArgumentOutOfRangeException(nameof(ScoreTemperature), ScoreTemperature,
                $"{nameof(ScoreTemperature)} must be a positive finite number; got {ScoreTemperature}.");
        if (!Enum.IsDefined(Pooling))
            throw new ArgumentOutOfRangeException(nameof(Pooling), Pooling, $"Unknown {nameof(Pooling)} {Pooling}.");
        if (BigramBuckets < 0 || BigramBuckets > ModelLimits.BigramBuckets)
            throw new ArgumentOutOfRangeException(nameof(BigramBuckets), BigramBuckets,
                $"{nameof(BigramBuckets)} must be in 0..{ModelLimits.BigramBuckets}; got {BigramBuckets}.");
        if (BigramBuckets > 0 && Layers > 0)
            throw new ArgumentOutOfRangeException(nameof(BigramBuckets), BigramBuckets,
                $"{nameof(BigramBuckets)} applies to the bag of embeddings only: it must be 0 with {nameof(Layers)} = {Layers}; got {BigramBuckets}.");
        if (PaddingId < 0 || PaddingId >= VocabularySize)
            throw new ArgumentOutOfRangeException(nameof(PaddingId), PaddingId,
                $"{nameof(PaddingId)} must be a token id in 0..{nameof(VocabularySize)} − 1 ({VocabularySize - 1}); got {PaddingId}.");
    }
}
