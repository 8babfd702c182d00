using static Microsoft.ML.Peer.Layers.OptionChecks;

namespace Microsoft.ML.Peer.Models;

/// <summary>
/// Shape of a <see cref="TransformerTextClassifier"/>: the shared transformer settings (<see cref="TransformerOptions"/>)
/// plus the number of classes and the padding token. The constructor's defaults are the recommended configuration (see
/// <see cref="Recommended"/>) except <see cref="Pooling"/> and the linear bag (<see cref="LinearBag"/> and its settings), whose
/// defaults read older saved models as they were;
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
    /// Whether a linear classifier over the text's bag of tokens and hashed token pairs adds its logits to the head's (a
    /// "wide and deep" model: fastText's linear model beside ours). It reads up to <see cref="LinearBagLength"/> tokens of
    /// each text, more than the encoder's <see cref="TransformerOptions.ContextLength"/> when that is larger, and weighs each
    /// token and pair by one over the square root of the text's length. Its tables start at zero and take
    /// (<see cref="TransformerOptions.VocabularySize"/> + <see cref="LinearBagBuckets"/>) × <see cref="ClassCount"/> weights.
    /// Default false, so that models saved before it existed read as they were; <see cref="Recommended"/> and the trainer use
    /// <see cref="RecommendedLinearBag"/>.
    /// </summary>
    public bool LinearBag { get; set; }

    /// <summary>The recommended <see cref="LinearBag"/>: on, chosen by cross-validation on the training parts of the classifier
    /// suite (docs/ml-net-plugin.md, "Sixth round").</summary>
    public const bool RecommendedLinearBag = true;

    /// <summary>
    /// Buckets of the linear bag's hashed token-pair table: a pair (a, b) of neighbouring tokens falls in bucket
    /// hash(a·V + b) mod LinearBagBuckets. 0 = tokens alone. Default 0; <see cref="Recommended"/> takes
    /// <see cref="RecommendedLinearBagBuckets"/>.
    /// </summary>
    public int LinearBagBuckets { get; set; }

    /// <summary>
    /// The recommended <see cref="LinearBagBuckets"/> for <paramref name="classCount"/> classes: 2^18, or fewer where the table
    /// would pass 2^22 weights (16 MiB), the largest power of two that keeps it below (2^16 for 35 classes).
    /// </summary>
    public static int RecommendedLinearBagBuckets(int classCount)
    {
        int buckets = 1 << 18;
        while (buckets > 1 && (long)buckets * Math.Max(classCount, 1) > 1 << 22) buckets >>= 1;
        return buckets;
    }

    /// <summary>The most weights the trainer gives the linear bag by default: 2^24 (64 MiB), so more than about 2,000 classes at the
    /// default vocabulary train without it unless asked.</summary>
    internal const long RecommendedLinearBagWeights = 1L << 24;

    /// <summary>Whether the linear bag's tables for <paramref name="vocabularySize"/> tokens, <paramref name="buckets"/> pair buckets and
    /// <paramref name="classCount"/> classes stay within <see cref="RecommendedLinearBagWeights"/>.</summary>
    private static bool LinearBagFits(int vocabularySize, int buckets, int classCount) =>
        ((long)vocabularySize + buckets) * classCount <= RecommendedLinearBagWeights;

    /// <summary>
    /// How many tokens of each text the linear bag reads when that is more than the encoder's
    /// <see cref="TransformerOptions.ContextLength"/>: inputs may then be this long, and the encoder reads ContextLength of
    /// them, the ones <see cref="Truncation"/> picks. 0 = ContextLength. Default 0; <see cref="Recommended"/> takes
    /// <see cref="RecommendedLinearBagLength"/>.
    /// </summary>
    public int LinearBagLength { get; set; }

    /// <summary>The recommended <see cref="LinearBagLength"/>: 2,048 tokens, chosen by cross-validation on the training parts of the
    /// classifier suite (docs/ml-net-plugin.md, "Sixth round"); the long manual pages needed it.</summary>
    public const int RecommendedLinearBagLength = 2048;

    /// <summary>Which tokens of an input longer than <see cref="TransformerOptions.ContextLength"/> the encoder reads (inputs are
    /// longer only for the linear bag); the trainer sets the truncation it encodes texts with. Default: the start and the
    /// end.</summary>
    public TextTruncation Truncation { get; set; }

    /// <summary>The most tokens of a text the model reads: <see cref="TransformerOptions.ContextLength"/>, or
    /// <see cref="LinearBagLength"/> when the linear bag reads more.</summary>
    internal int InputLength => LinearBag ? Math.Max(ContextLength, LinearBagLength) : ContextLength;

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
    /// pooled text vector with N = 128², h = 4, k = 8, d_key = 64 and sparse gradients) with <see cref="RecommendedPooling"/> and the
    /// linear bag (<see cref="RecommendedLinearBag"/>, <see cref="RecommendedLinearBagLength"/>,
    /// <see cref="RecommendedLinearBagBuckets"/>; left out where its tables would pass 2^24 weights). See
    /// <c>ClassifierTrainingOptions</c> for the matching training settings.
    /// </summary>
    /// <remarks>
    /// Why no blocks: attention's cost grows with the context, and at the 512 tokens whole mails need, blocks were both
    /// slower and less accurate than the bag of embeddings (measurements: docs/ml-net-plugin.md, "Why the classifier has
    /// no attention blocks by default").
    /// </remarks>
    public static TextClassifierOptions Recommended(int vocabularySize, int classCount, int paddingId)
    {
        var options = new TextClassifierOptions { VocabularySize = vocabularySize, ClassCount = classCount, PaddingId = paddingId, Pooling = RecommendedPooling };
        options.UseLinearBag(RecommendedLinearBag, RecommendedLinearBagLength);
        return options;
    }

    /// <summary>
    /// Sets the linear bag as the trainer and <see cref="Recommended"/> want it for this vocabulary and class count: on when
    /// <paramref name="wanted"/> and its tables fit <see cref="RecommendedLinearBagWeights"/>, reading <paramref name="length"/>
    /// tokens, with <see cref="RecommendedLinearBagBuckets"/> pair buckets.
    /// </summary>
    internal void UseLinearBag(bool wanted, int length)
    {
        LinearBagBuckets = RecommendedLinearBagBuckets(ClassCount);
        LinearBag = wanted && LinearBagFits(VocabularySize, LinearBagBuckets, ClassCount);
        LinearBagLength = length;
    }

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

    /// <summary>
    /// Refuses (<see cref="InvalidDataException"/>, naming the first property that differs) options of an ensemble's model that
    /// differ from its first model's in anything but <see cref="ScoreTemperature"/>: the models of an ensemble share one shape,
    /// one tokenizer and one input.
    /// </summary>
    internal static void CheckSameShape(TextClassifierOptions first, TextClassifierOptions other)
    {
        foreach (var property in typeof(TextClassifierOptions).GetProperties(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance))
        {
            if (property.Name == nameof(ScoreTemperature) || !property.CanRead || property.GetIndexParameters().Length > 0) continue;
            string a = System.Text.Json.JsonSerializer.Serialize(property.GetValue(first)), b = System.Text.Json.JsonSerializer.Serialize(property.GetValue(other));
            if (a != b) throw new InvalidDataException($"its {property.Name} is {b}, the first model's {a}.");
        }
    }

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
        if (LinearBagBuckets < 0 || LinearBagBuckets > ModelLimits.BigramBuckets)
            throw new ArgumentOutOfRangeException(nameof(LinearBagBuckets), LinearBagBuckets,
                $"{nameof(LinearBagBuckets)} must be in 0..{ModelLimits.BigramBuckets}; got {LinearBagBuckets}.");
        if (LinearBag && ((long)VocabularySize + LinearBagBuckets) * ClassCount > ModelLimits.LinearBagWeights)
            throw new ArgumentOutOfRangeException(nameof(LinearBagBuckets), LinearBagBuckets,
                $"The linear bag's tables would hold ({nameof(VocabularySize)} {VocabularySize} + {nameof(LinearBagBuckets)} {LinearBagBuckets}) × " +
                $"{ClassCount} classes, more than {ModelLimits.LinearBagWeights:N0} weights: lower them or turn {nameof(LinearBag)} off.");
        if (LinearBagLength < 0 || LinearBagLength > ModelLimits.ContextLength)
            throw new ArgumentOutOfRangeException(nameof(LinearBagLength), LinearBagLength,
                $"{nameof(LinearBagLength)} must be in 0..{ModelLimits.ContextLength} (0 = {nameof(ContextLength)}); got {LinearBagLength}.");
        if (!Enum.IsDefined(Truncation))
            throw new ArgumentOutOfRangeException(nameof(Truncation), Truncation, $"Unknown {nameof(Truncation)} {Truncation}.");
        if (PaddingId < 0 || PaddingId >= VocabularySize)
            throw new ArgumentOutOfRangeException(nameof(PaddingId), PaddingId,
                $"{nameof(PaddingId)} must be a token id in 0..{nameof(VocabularySize)} − 1 ({VocabularySize - 1}); got {PaddingId}.");
    }
}
