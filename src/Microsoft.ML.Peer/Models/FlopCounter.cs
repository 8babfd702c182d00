using Microsoft.ML.Peer.Layers;

namespace Microsoft.ML.Peer.Models;

/// <summary>
/// Forward FLOPs per token of a <see cref="TransformerLanguageModel"/>, split by part, for isoFLOP comparisons.
/// </summary>
/// <param name="Attention">All blocks' attention: QKV and output projections, QKᵀ and the weighted sum of V.</param>
/// <param name="DenseFeedForward">The dense FFW blocks.</param>
/// <param name="SparseFeedForward">The sparse blocks' experts: MoE expert MLPs, PKM value sums, PEER single-neuron experts.</param>
/// <param name="Routing">MoE router; PKM/PEER query projection, sub-key scoring and the k² candidate sums of each head.</param>
/// <param name="Selection">Top-k selection, one operation per comparison: h·(2n + k²) per product-key layer, E per MoE layer.</param>
/// <param name="OutputHead">The tied output projection 2·d·V.</param>
internal sealed record FlopBreakdown(long Attention, long DenseFeedForward, long SparseFeedForward, long Routing, long Selection,
    long OutputHead)
{
    /// <summary>Everything above (selection included).</summary>
    public long Total => Attention + DenseFeedForward + SparseFeedForward + Routing + Selection + OutputHead;
}

/// <summary>
/// Counts forward FLOPs per token (a multiply-add is 2 FLOPs) of a <see cref="LanguageModelOptions"/>, and parameters and
/// state elements of either model,
/// without building the model. Matrix products only, plus the top-k comparisons of retrieval; token/position
/// lookups, layer norms, batch norm, activations and softmaxes are elementwise and not counted. Attention scores are
/// counted over the full context T for every token (no causal halving), as Kaplan et al. (2020) do. Training costs
/// 3× forward (backward ≈ 2× forward).
/// </summary>
internal static class FlopCounter
{
    /// <summary>Forward FLOPs per token of the whole model.</summary>
    public static FlopBreakdown ForwardPerToken(LanguageModelOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        int d = options.ModelDimension;
        long attention = options.Layers * AttentionFlops(d, options.ContextLength);
        long dense = 0, sparse = 0, routing = 0, selection = 0;
        var sparseBlocks = options.EffectiveSparseBlocks;
        for (int block = 0; block < options.Layers; block++)
        {
            if (!sparseBlocks.Contains(block)) { dense += DenseFlops(d, options.EffectiveDenseHidden); continue; }
            switch (options.FeedForward)
            {
                case FeedForwardKind.MoE:
                    sparse += (long)options.MoeTopK * DenseFlops(d, options.EffectiveMoeHidden);
                    routing += 2L * d * options.MoeExperts;
                    selection += options.MoeExperts;
                    break;
                case FeedForwardKind.ProductKeyMemory:
                    sparse += 2L * options.ProductKeyMemory.Heads * options.ProductKeyMemory.TopK * d;
                    routing += RoutingFlops(d, options.ProductKeyMemory);
                    selection += SelectionOperations(options.ProductKeyMemory);
                    break;
                case FeedForwardKind.Peer:
                    sparse += 4L * options.Peer.Heads * options.Peer.TopK * d;
                    routing += RoutingFlops(d, options.Peer);
                    selection += SelectionOperations(options.Peer);
                    break;
                default:
                    throw new InvalidOperationException($"Unknown feed-forward kind {options.FeedForward}.");
            }
        }
        return new FlopBreakdown(attention, dense, sparse, routing, selection, 2L * d * options.VocabularySize);
    }

    /// <summary>Training FLOPs for <paramref name="tokens"/> tokens: 3 × forward FLOPs per token × tokens.</summary>
    public static double TrainingFlops(LanguageModelOptions options, long tokens) => 3.0 * ForwardPerToken(options).Total * tokens;

    /// <summary>One block's attention: 2·d·3d (QKV) + 2·d·d (output) + 2·T·d (QKᵀ) + 2·T·d (weights × V).</summary>
    public static long AttentionFlops(int dimension, int context) => 8L * dimension * dimension + 4L * context * dimension;

    /// <summary>A dense FFW d → H → d: 2·d·H + 2·H·d.</summary>
    public static long DenseFlops(int dimension, int hidden) => 4L * dimension * hidden;

    /// <summary>
    /// Product-key routing: query projection 2·d·(h·d_key), scoring both halves of each head's query against the n
    /// sub-keys of its half 2·h·2·n·(d_key/2), the k² candidate sums h·k², and with query whitening its h d_key×d_key
    /// products 2·h·d_key².
    /// </summary>
    public static long RoutingFlops(int dimension, ProductKeyOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        long h = options.Heads, n = options.SubKeys, k = options.TopK, key = options.KeyDimension;
        return 2L * dimension * h * key + 2L * h * 2 * n * (key / 2) + h * k * k + (options.QueryWhitening ? 2L * h * key * key : 0);
    }

    /// <summary>Top-k comparisons of product-key retrieval: h·(2n + k²) (the top-k of each half, then of the k² candidates).</summary>
    public static long SelectionOperations(ProductKeyOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        long h = options.Heads, n = options.SubKeys, k = options.TopK;
        return h * (2 * n + k * k);
    }

    /// <summary>Trainable parameters of the model <paramref name="options"/> describes (what <c>parameters()</c> holds; BN running
    /// statistics are buffers).</summary>
    public static long TotalParameters(LanguageModelOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        long d = options.ModelDimension;
        // Embeddings (the output head is tied to the token embedding), the blocks, the final LN.
        return EmbeddingParameters(options) + BlockParameters(options) + 2 * d;
    }

    /// <summary>Trainable parameters of the text classifier <paramref name="options"/> describes.</summary>
    public static long TotalParameters(TextClassifierOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        long d = options.ModelDimension;
        long total = EmbeddingParameters(options) + BlockParameters(options) + 2 * d;         // ... and the final LN
        if (options.Layers == 0) total += 2 * d + FeedForwardParameters(options, options.FeedForward);   // pooled LN + FFW
        if (options.BigramBuckets > 0) total += (options.BigramBuckets + 1L) * d;                 // pair table + padding row
        if (options.LinearBag)                                                                    // token table + pair table and its padding row
            total += ((long)options.VocabularySize + (options.LinearBagBuckets > 0 ? options.LinearBagBuckets + 1L : 0)) * options.ClassCount;
        total += options.Pooling switch
        {
            TextPooling.Attention => d,                                                       // the pooling query
            TextPooling.MeanAndMax => 2 * d * d + d,                                          // the projection back to d
            _ => 0,
        };
        return total + d * options.ClassCount + options.ClassCount;                           // untied linear head
    }

    /// <summary>
    /// Every element of the model's <c>state_dict()</c>: its parameters plus the buffers, which are the query batch
    /// norms' running mean and variance and their int64 batch counter. A saved model's weights stream must hold exactly
    /// this many values, which lets loading check a file's options against its weights before it allocates anything.
    /// </summary>
    public static long StateElements(TransformerOptions options) => options switch
    {
        LanguageModelOptions lm => TotalParameters(lm) + BufferElements(lm),
        TextClassifierOptions classifier => TotalParameters(classifier) + BufferElements(classifier),
        null => throw new ArgumentNullException(nameof(options)),
        _ => throw new ArgumentException($"Unknown model options {options.GetType().Name}.", nameof(options)),
    };

    private static long BufferElements(TransformerOptions options)
    {
        var kinds = options.EffectiveSparseBlocks.Select(_ => options.FeedForward).ToList();
        if (options is TextClassifierOptions { Layers: 0 }) kinds.Add(options.FeedForward);
        // Each batch norm holds a running mean and variance per feature and one batch counter; query whitening, in the query
        // batch norm's place, a running mean per feature and a covariance per head.
        static long RouterBuffers(long d, ProductKeyOptions router)
        {
            long query = (long)router.Heads * router.KeyDimension;
            long queryNorm = !router.QueryBatchNorm ? 0 : router.QueryWhitening ? query + query * router.KeyDimension : 2 * query + 1;
            return queryNorm + (router.InputBatchNorm ? 2 * d + 1 : 0);
        }
        return kinds.Sum(kind => kind switch
        {
            FeedForwardKind.Peer => RouterBuffers(options.ModelDimension, options.Peer),
            FeedForwardKind.ProductKeyMemory => RouterBuffers(options.ModelDimension, options.ProductKeyMemory),
            _ => 0L,
        });
    }

    private static long EmbeddingParameters(TransformerOptions options) =>
        ((long)options.VocabularySize + options.ContextLength) * options.ModelDimension;

    private static long BlockParameters(TransformerOptions options)
    {
        long d = options.ModelDimension;
        long attention = 3 * d * d + 3 * d + d * d + d;
        var sparseBlocks = options.EffectiveSparseBlocks;
        long total = 0;
        for (int block = 0; block < options.Layers; block++)
            total += 4 * d + attention                                                                // two LNs, attention
                + FeedForwardParameters(options, sparseBlocks.Contains(block) ? options.FeedForward : FeedForwardKind.Dense);
        return total;
    }

    private static long FeedForwardParameters(TransformerOptions options, FeedForwardKind kind)
    {
        long d = options.ModelDimension;
        return kind switch
        {
            FeedForwardKind.Dense => DenseParameters(d, options.EffectiveDenseHidden),
            FeedForwardKind.MoE => d * options.MoeExperts + options.MoeExperts * DenseParameters(d, options.EffectiveMoeHidden),
            FeedForwardKind.ProductKeyMemory => RouterParameters(d, options.ProductKeyMemory) + (long)options.ProductKeyMemory.Experts * d,
            FeedForwardKind.Peer => RouterParameters(d, options.Peer) + 2L * options.Peer.Experts * d,
            _ => throw new InvalidOperationException($"Unknown feed-forward kind {kind}."),
        };
    }

    /// <summary>
    /// Parameters one token uses: all but the experts it does not reach, i.e. the total less (E − k) MoE experts,
    /// less (N − h·k) PKM value rows or PEER expert pairs (u_i, v_i) per sparse block.
    /// </summary>
    public static long ActiveParameters(LanguageModelOptions options)
    {
        long total = TotalParameters(options);
        long d = options.ModelDimension;
        long blocks = options.EffectiveSparseBlocks.Length;
        long inactive = options.FeedForward switch
        {
            FeedForwardKind.MoE => (long)(options.MoeExperts - options.MoeTopK) * DenseParameters(d, options.EffectiveMoeHidden),
            FeedForwardKind.ProductKeyMemory
                => Math.Max(0, options.ProductKeyMemory.Experts - (long)options.ProductKeyMemory.Heads * options.ProductKeyMemory.TopK) * d,
            FeedForwardKind.Peer => Math.Max(0, options.Peer.Experts - (long)options.Peer.Heads * options.Peer.TopK) * 2 * d,
            _ => 0,
        };
        return total - blocks * inactive;
    }

    private static long DenseParameters(long d, long hidden) => d * hidden + hidden + hidden * d + d;

    private static long RouterParameters(long d, ProductKeyOptions options)
    {
        long query = (long)options.Heads * options.KeyDimension;
        return (options.InputBatchNorm ? 2 * d : 0) + d * query + query + (options.QueryBatchNorm ? 2 * query : 0)
            + (long)options.SubKeys * options.KeyDimension;
    }
}
