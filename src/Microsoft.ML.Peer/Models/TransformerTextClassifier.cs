using Microsoft.ML.Peer.Native;
using Microsoft.ML.Peer.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Peer.Models;

/// <summary>
/// Transformer encoder text classifier: token + learned position embeddings, bidirectional pre-norm blocks
/// (dense, MoE, PKM or PEER feed-forward, as <see cref="TransformerOptions.FeedForward"/> picks) with padding
/// masked, a final LayerNorm, pooling over the real tokens (<see cref="TextClassifierOptions.Pooling"/>) and a linear head.
/// With no blocks (<see cref="TransformerOptions.Layers"/> = 0) it is a bag of embeddings (plus hashed token pairs when
/// <see cref="TextClassifierOptions.BigramBuckets"/> is set) whose pooled vector passes through one pre-norm residual
/// feed-forward of the chosen kind before the head (by default a PKM layer): a PKM or PEER layer then retrieves once per
/// text instead of once per token, which is what makes whole mails affordable on two CPU cores.
/// </summary>
/// <remarks>
/// Padding (<see cref="TextClassifierOptions.PaddingId"/>) changes nothing for a text: it is hidden from attention,
/// the feed-forward runs on real tokens only (so PEER's query batch norm never sees it) and the pooling skips it;
/// positions count from each text's first token. Position 0 always counts as real, so an empty text (all padding)
/// is scored as one padding token rather than as an undefined mean of nothing.
/// </remarks>
public sealed class TransformerTextClassifier : TransformerModel<TextClassifierOptions>
{
    private readonly LayerNorm? pooled_norm;
    private readonly Module<Tensor, Tensor>? pooled_feed_forward;
    private readonly Embedding? bigram_embedding;
    private readonly Linear? pooled_projection;
    private readonly Parameter? pooling_query;
    private readonly Linear head;
    private readonly Embedding? linear_bag_tokens;
    private readonly Embedding? linear_bag_pairs;

    /// <summary>The name of the hashed token-pair table among the model's parameters (when it has one).</summary>
    internal const string BigramTableName = nameof(bigram_embedding) + ".weight";

    /// <summary>The names of the linear bag's token and pair tables among the model's parameters (when it has them).</summary>
    internal const string LinearBagTokenTableName = nameof(linear_bag_tokens) + ".weight", LinearBagPairTableName = nameof(linear_bag_pairs) + ".weight";

    /// <summary>
    /// Both linear bag tables. Training leaves them out of the weight average: a row moves only in the steps whose texts hold
    /// its token or pair, and averaging the whole table every step made debian-sections' folds 40% slower for no better
    /// log-loss (docs/ml-net-plugin.md, "Sixth round").
    /// </summary>
    internal static readonly IReadOnlySet<string> LinearBagTableNames = new HashSet<string> { LinearBagTokenTableName, LinearBagPairTableName };

    public TransformerTextClassifier(TextClassifierOptions options)
        : base(nameof(TransformerTextClassifier), options, o => o.Validate(), o => o.Clone(), causal: false)
    {
        int d = options.ModelDimension;
        if (options.Layers == 0)
        {
            pooled_norm = nn.LayerNorm(d);
            pooled_feed_forward = Settings.CreateFeedForward(Settings.FeedForward);
            if (options.BigramBuckets > 0)
            {
                // Sparse row gradients: a step touches only the buckets of its texts' pairs. Zeros at the start, so training
                // begins from the plain bag of tokens and the pairs add only what the tokens alone miss.
                // One more row, the padding row: pairs that touch padding read it, always zero and never in a gradient.
                bigram_embedding = nn.Embedding(options.BigramBuckets + 1, d, padding_idx: options.BigramBuckets, sparse: true);
                using (no_grad()) bigram_embedding.weight!.zero_();
            }
        }
        if (options.Pooling == TextPooling.MeanAndMax) pooled_projection = nn.Linear(2 * d, d);
        if (options.Pooling == TextPooling.Attention) pooling_query = nn.Parameter(zeros(d));
        head = nn.Linear(d, options.ClassCount);
        if (options.LinearBag)
        {
            // Zeros at the start, so training begins from the encoder alone; sparse row gradients, as a step touches few rows.
            // The padding token's row (and the pair table's extra padding row) stays zero and out of every gradient.
            linear_bag_tokens = nn.Embedding(options.VocabularySize, options.ClassCount, padding_idx: options.PaddingId, sparse: true);
            using (no_grad()) linear_bag_tokens.weight!.zero_();
            if (options.LinearBagBuckets > 0)
            {
                linear_bag_pairs = nn.Embedding(options.LinearBagBuckets + 1, options.ClassCount, padding_idx: options.LinearBagBuckets, sparse: true);
                using (no_grad()) linear_bag_pairs.weight!.zero_();
            }
        }
        RegisterComponents();
    }

    public TextClassifierOptions Options => Settings.Clone();

    /// <summary>Every feed-forward of the model: the blocks' in order, or the one over the pooled vector when there are no
    /// blocks.</summary>
    private protected override IEnumerable<Module<Tensor, Tensor>> FeedForwards =>
        pooled_feed_forward is not null ? new[] { pooled_feed_forward } : base.FeedForwards;

    /// <summary>Every product-key router (PEER and PKM layers) with the index of its block.</summary>
    /// <remarks>Without blocks, the feed-forward over the pooled text vector is reported as block 0.</remarks>
    public override IEnumerable<(int Block, ProductKeyRouter Router)> ProductKeyRouters => pooled_feed_forward switch
    {
        PeerLayer p => new[] { (0, p.Router) },
        ProductKeyMemory m => new[] { (0, m.Router) },
        _ => base.ProductKeyRouters,
    };

    /// <summary>The expert/value tables whose gradients are sparse rows (PEER and PKM with SparseGradients on).</summary>
    public override IEnumerable<Parameter> SparseGradientTables() => (pooled_feed_forward switch
    {
        PeerLayer p when p.Options.SparseGradients => new[] { p.DownWeights, p.UpWeights },
        ProductKeyMemory m when m.SparseGradients => new[] { m.Values },
        null => base.SparseGradientTables(),
        _ => Array.Empty<Parameter>(),
    }).Concat(new[] { bigram_embedding, linear_bag_tokens, linear_bag_pairs }.Where(e => e is not null).Select(e => e!.weight!));

    /// <summary>The names of every table whose gradients are sparse rows: the PEER/PKM tables that have them and the token-pair
    /// table.</summary>
    internal IEnumerable<string> SparseGradientTableNames() =>
        ExpertTableNames().Where(t => t.Sparse).Select(t => t.Name)
            .Concat(new[] { (bigram_embedding, BigramTableName), (linear_bag_tokens, LinearBagTokenTableName), (linear_bag_pairs, LinearBagPairTableName) }
                .Where(t => t.Item1 is not null).Select(t => t.Item2));

    /// <summary>Tokens [B, T] (int64, T ≤ <see cref="TextClassifierOptions.InputLength"/>, each text's tokens first, padded with
    /// PaddingId) → class logits [B, C]. The encoder reads at most ContextLength of each text's tokens.</summary>
    public override Tensor forward(Tensor tokens) => Logits(tokens, withLinearBag: true);

    /// <summary>The logits of <see cref="forward"/>, with or without the linear bag's (scoring adds those from the token ids,
    /// <see cref="LinearBagLogitsOf"/>).</summary>
    private Tensor Logits(Tensor tokens, bool withLinearBag)
    {
        CheckTokens(tokens, TooLongHint, Settings.InputLength, Settings.LinearBag ? "input" : "context");
        using var scope = NewDisposeScope();
        var real = tokens.ne(Settings.PaddingId);
        var encoderTokens = tokens.shape[1] > Settings.ContextLength ? EncoderTokens(tokens, real) : tokens;
        var mask = encoderTokens.ne(Settings.PaddingId);
        if (training && Settings.TokenDropout > 0)
            mask = mask.logical_and(rand(mask.shape, device: tokens.device).ge(Settings.TokenDropout));
        mask.index_fill_(1, tensor(new long[] { 0 }, device: tokens.device), true);
        var h = Encode(encoderTokens, mask, TooLongHint);
        var pooled = Pool(h, mask);
        if (bigram_embedding is not null && encoderTokens.shape[1] > 1) pooled = pooled + MeanBigramEmbedding(encoderTokens, mask);
        if (pooled_feed_forward is not null) pooled = pooled + pooled_feed_forward.forward(pooled_norm!.forward(pooled));
        var logits = head.forward(pooled);
        if (withLinearBag && linear_bag_tokens is not null) logits = logits + LinearBagLogits(tokens, real);
        return logits.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// [B, ContextLength]: the tokens of an input longer than the context that the encoder reads, as
    /// <see cref="TextClassifierOptions.Truncation"/> picks them from each text's real tokens: its first ContextLength, or its
    /// first ⌈ContextLength/2⌉ and last ⌊ContextLength/2⌋ (the tokens a text truncated to ContextLength keeps).
    /// </summary>
    private Tensor EncoderTokens(Tensor tokens, Tensor real)
    {
        long context = Settings.ContextLength;
        if (Settings.Truncation == TextTruncation.KeepStart) return tokens.narrow(1, 0, context);
        using var scope = NewDisposeScope();
        var lengths = real.sum(1).unsqueeze(-1);                                   // [B, 1]
        var positions = arange(context, device: tokens.device).unsqueeze(0);       // [1, context]
        var fromEnd = lengths - context + positions;                               // the last ⌊context/2⌋ for positions past the head
        var keepStart = lengths.le(context).logical_or(positions.lt((context + 1) / 2));
        var index = where(keepStart, positions.expand(tokens.shape[0], context), fromEnd);
        return tokens.gather(1, index).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// [B, C]: the linear bag's logits: the sum of the rows of each text's real tokens and of its pairs of neighbouring real
    /// tokens, over the square root of its token count (zero for an empty text).
    /// </summary>
    private Tensor LinearBagLogits(Tensor tokens, Tensor real)
    {
        using var scope = NewDisposeScope();
        var sum = linear_bag_tokens!.forward(tokens).sum(1);  // padding reads the zero row
        if (linear_bag_pairs is not null && tokens.shape[1] > 1)
            sum = sum + linear_bag_pairs.forward(PairBuckets(tokens, real, Settings.LinearBagBuckets, Settings.VocabularySize)).sum(1);
        var length = real.sum(1, type: ScalarType.Float32).clamp_min(1).sqrt().unsqueeze(-1);
        return (sum / length).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Whether scoring can read the linear bag's rows straight from its tables (float32, contiguous, on the CPU): a row's bag
    /// is then a loop over its token ids instead of a dozen small tensor operations, whose fixed costs weighed on the forward
    /// pass of a single long text (docs/performance.md).
    /// </summary>
    private bool ReadsLinearBagDirectly =>
        linear_bag_tokens is not null && Readable(linear_bag_tokens.weight!) && (linear_bag_pairs is null || Readable(linear_bag_pairs.weight!));

    private static bool Readable(Tensor table) =>
        table.device_type == DeviceType.CPU && table.dtype == ScalarType.Float32 && table.is_contiguous();

    /// <summary>
    /// [B, C]: <see cref="LinearBagLogits"/> of the texts <paramref name="batch"/> indexes (each cut to its first
    /// <see cref="TextClassifierOptions.InputLength"/> ids), summed from the token ids and the tables' rows directly. The
    /// same sums as the tensor path, in another order (double accumulation); only for scoring without gradients, where
    /// <see cref="ReadsLinearBagDirectly"/>.
    /// </summary>
    private unsafe Tensor LinearBagLogitsOf(IReadOnlyList<int[]> texts, int[] batch)
    {
        int classes = Settings.ClassCount, vocabulary = Settings.VocabularySize, buckets = Settings.LinearBagBuckets;
        long padding = Settings.PaddingId;
        float* tokenRows = (float*)PeerNativeMethods.TensorData(linear_bag_tokens!.weight!.Handle);
        float* pairRows = linear_bag_pairs is null ? null : (float*)PeerNativeMethods.TensorData(linear_bag_pairs.weight!.Handle);
        var result = new float[batch.Length * classes];
        var sum = new double[classes];
        for (int b = 0; b < batch.Length; b++)
        {
            var text = texts[batch[b]];
            int length = Math.Min(text.Length, Settings.InputLength);
            Array.Clear(sum);
            int real = 0;
            for (int t = 0; t < length; t++)
            {
                int id = text[t];
                // The tensor path's embedding lookup refuses such an id; here it would read outside the table.
                if ((uint)id >= (uint)vocabulary)
                    throw new ArgumentException($"Token id {id} at position {t} is outside the vocabulary 0..{vocabulary - 1}.", nameof(texts));
                if (id == padding) continue;
                real++;
                AddRow(sum, tokenRows + (long)id * classes);
                // An out-of-vocabulary second token still hashes to a bucket in the table; the next step refuses it.
                if (pairRows is not null && t + 1 < length && text[t + 1] != padding)
                    AddRow(sum, pairRows + PairBucket(id, text[t + 1], buckets, vocabulary) * classes);
            }
            float scale = MathF.Sqrt(Math.Max(1, real));
            for (int c = 0; c < classes; c++) result[b * classes + c] = (float)sum[c] / scale;
        }
        return tensor(result, new long[] { batch.Length, classes });

        static void AddRow(double[] sum, float* row)
        {
            for (int c = 0; c < sum.Length; c++) sum[c] += row[c];
        }
    }

    /// <summary>[B, T, d] token vectors and their [B, T] mask (true = real) → [B, d] text vectors, as
    /// <see cref="TextClassifierOptions.Pooling"/> says.</summary>
    private Tensor Pool(Tensor h, Tensor mask)
    {
        using var scope = NewDisposeScope();
        var weights = mask.unsqueeze(-1).to(h.dtype);
        Tensor Mean() => (h * weights).sum(1) / weights.sum(1);
        Tensor Max() => h.masked_fill(mask.logical_not().unsqueeze(-1), float.NegativeInfinity).amax(1);
        var pooled = Settings.Pooling switch
        {
            TextPooling.Mean => Mean(),
            TextPooling.Max => Max(),
            TextPooling.MeanAndMax => pooled_projection!.forward(cat(new[] { Mean(), Max() }, 1)),
            TextPooling.Attention => (F.softmax(matmul(h, pooling_query!).masked_fill(mask.logical_not(), float.NegativeInfinity), 1)
                .unsqueeze(-1) * h).sum(1),
            _ => throw new InvalidOperationException($"Unknown pooling {Settings.Pooling}."),
        };
        return pooled.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// [B, d]: the mean over each text's pairs of neighbouring real tokens of the pair's bucket embedding (zero for a text
    /// with no pair). A pair (a, b) falls in bucket hash(a·V + b) mod <see cref="TextClassifierOptions.BigramBuckets"/>, as
    /// fastText hashes its n-grams: word order the bag of tokens cannot see, at the cost of one table row per pair.
    /// </summary>
    private Tensor MeanBigramEmbedding(Tensor tokens, Tensor mask)
    {
        using var scope = NewDisposeScope();
        var real = mask.narrow(1, 0, tokens.shape[1] - 1).logical_and(mask.narrow(1, 1, tokens.shape[1] - 1));
        var sum = bigram_embedding!.forward(PairBuckets(tokens, mask, Settings.BigramBuckets, Settings.VocabularySize)).sum(1);
        return (sum / real.sum(1, type: ScalarType.Float32).clamp_min(1).unsqueeze(-1)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// [B, T − 1] int64: the bucket of each pair of neighbouring tokens, hash(a·V + b) mod <paramref name="buckets"/>, or
    /// <paramref name="buckets"/> (the tables' padding row) where either token is not real.
    /// </summary>
    private static Tensor PairBuckets(Tensor tokens, Tensor real, int buckets, int vocabularySize)
    {
        using var scope = NewDisposeScope();
        long pairs = tokens.shape[1] - 1;
        var realPair = real.narrow(1, 0, pairs).logical_and(real.narrow(1, 1, pairs));
        // PairBucket's hash, on tensors.
        return (tokens.narrow(1, 0, pairs) * vocabularySize + tokens.narrow(1, 1, pairs)).mul(PairHashMultiplier).bitwise_and(0xFFFFFFFFL)
            .remainder(buckets).masked_fill(realPair.logical_not(), buckets).MoveToOuterDisposeScope();
    }

    // Knuth's multiplicative hash of the pair's index a·V + b, kept to its low 32 bits (which int64 overflow leaves intact).
    private const long PairHashMultiplier = 2654435761L;

    /// <summary>The bucket of the pair of real tokens (<paramref name="first"/>, <paramref name="second"/>): the hash of
    /// <see cref="PairBuckets"/>, for one pair.</summary>
    internal static long PairBucket(long first, long second, int buckets, int vocabularySize) =>
        (unchecked((first * vocabularySize + second) * PairHashMultiplier) & 0xFFFFFFFFL) % buckets;

    private const string TooLongHint = "; truncate the texts first";

    /// <summary>The positions a text of token ids <paramref name="text"/> takes in a batch: its first <paramref name="inputLength"/>, at
    /// least one.</summary>
    internal static int BatchLength(int[] text, int inputLength) => Math.Max(1, Math.Min(text.Length, inputLength));

    /// <summary>
    /// [B, T] int64 token ids of the texts <paramref name="batch"/> indexes: each text's first tokens, padded with
    /// <see cref="TextClassifierOptions.PaddingId"/> to the longest (an empty text is one padding token).
    /// </summary>
    internal Tensor Batch(IReadOnlyList<int[]> texts, IReadOnlyList<int> batch)
    {
        int time = batch.Max(i => BatchLength(texts[i], Settings.InputLength));
        var data = new long[batch.Count * time];
        Array.Fill(data, Settings.PaddingId);
        for (int b = 0; b < batch.Count; b++)
        {
            var text = texts[batch[b]];
            int length = Math.Min(text.Length, time);
            for (int t = 0; t < length; t++) data[b * time + t] = text[t];
        }
        return tensor(data, new long[] { batch.Count, time });
    }

    /// <summary>
    /// Class probabilities [text][class] of texts of token ids: the softmax of the logits divided by
    /// <see cref="TextClassifierOptions.ScoreTemperature"/>. See <see cref="PredictLogits"/>. The one scoring path of the trainer's
    /// validation and the transformer's rows.
    /// </summary>
    internal float[][] PredictProbabilities(IReadOnlyList<int[]> texts, int batchSize) =>
        Predict(texts, batchSize, logits => F.softmax(logits / Settings.ScoreTemperature, -1));

    /// <summary>
    /// Class logits [text][class] of texts of token ids, in the model's current mode (scoring uses evaluation mode), without
    /// gradients, in batches of up to <paramref name="batchSize"/> texts of similar length. A text's logits do not depend on the
    /// other texts (padding is masked).
    /// </summary>
    internal float[][] PredictLogits(IReadOnlyList<int[]> texts, int batchSize) => Predict(texts, batchSize, logits => logits);

    /// <summary>The temperature scoring divides the logits by (the trainer sets the one it fits).</summary>
    internal double ScoreTemperature
    {
        get => Settings.ScoreTemperature;
        set
        {
            if (!(value > 0) || !double.IsFinite(value))
                throw new ArgumentOutOfRangeException(nameof(value), value, $"The score temperature must be positive and finite; got {value}.");
            Settings.ScoreTemperature = value;
        }
    }

    private float[][] Predict(IReadOnlyList<int[]> texts, int batchSize, Func<Tensor, Tensor> output)
    {
        var result = new float[texts.Count][];
        var order = Enumerable.Range(0, texts.Count).OrderBy(i => BatchLength(texts[i], Settings.InputLength)).ToArray();
        using var noGrad = no_grad();
        for (int first = 0; first < order.Length; first += batchSize)
        {
            using var scope = NewDisposeScope();
            var batch = order[first..Math.Min(order.Length, first + batchSize)];
            // The bag first: it checks every id it reads before the encoder's lookups see them.
            var bag = ReadsLinearBagDirectly ? LinearBagLogitsOf(texts, batch) : null;
            var tokens = Batch(texts, batch);
            var logits = bag is null ? forward(tokens) : Logits(tokens, withLinearBag: false) + bag;
            var flat = output(logits).contiguous().data<float>().ToArray();
            int classes = Settings.ClassCount;
            for (int b = 0; b < batch.Length; b++) result[batch[b]] = flat[(b * classes)..((b + 1) * classes)];
        }
        return result;
    }

    /// <summary>
    /// Mean cross-entropy of the texts' <paramref name="labels"/> [B] (int64) plus, in training mode, the weighted
    /// auxiliary losses (MoE load balancing). Returns (total loss, cross-entropy alone, logits).
    /// </summary>
    public (Tensor Loss, Tensor CrossEntropy, Tensor Logits) Loss(Tensor tokens, Tensor labels)
    {
        using var scope = NewDisposeScope();
        var logits = forward(tokens);
        var crossEntropy = F.cross_entropy(logits, labels);
        var loss = training && Settings.LabelSmoothing > 0
            ? F.cross_entropy(logits, labels, label_smoothing: Settings.LabelSmoothing)
            : crossEntropy;
        loss = WithAuxiliaryLosses(loss);
        return (loss.MoveToOuterDisposeScope(), crossEntropy.MoveToOuterDisposeScope(), logits.MoveToOuterDisposeScope());
    }
}
