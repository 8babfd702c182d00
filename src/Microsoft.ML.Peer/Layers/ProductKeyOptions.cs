using Microsoft.ML.Peer.Native;
using static Microsoft.ML.Peer.Layers.OptionChecks;

namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// Options of a product-key retrieval layer (PKM, and the routing half of PEER).
/// Defaults follow the PEER paper (arXiv 2407.04153, §3): N = 1024², 8 heads, top-16, query batch norm on.
/// </summary>
public class ProductKeyOptions
{
    /// <summary>Number of experts (memory slots) N. Must be a perfect square n²; default 1,048,576 = 1024², at most 8192².</summary>
    public int Experts { get; set; } = 1024 * 1024;

    /// <summary>Retrieval heads h; each retrieves its own top-k from the one shared pool. Default 8; at most 1,024.</summary>
    public int Heads { get; set; } = 8;

    /// <summary>Experts retrieved per head, k ≤ sqrt(N). Default 16.</summary>
    public int TopK { get; set; } = 16;

    /// <summary>Query (and product key) dimension; even, since it is split into two halves. Default 128; at most 16,384.</summary>
    public int KeyDimension { get; set; } = 128;

    /// <summary>
    /// Batch-normalise the projected query before splitting it into heads and halves (as PKM does). Default true.
    /// In training mode the batch statistics include later tokens of the same batch, a small causality
    /// leak inherited from PKM; evaluation and generation use running statistics and do not leak.
    /// </summary>
    public bool QueryBatchNorm { get; set; } = true;

    /// <summary>
    /// Batch-normalise the layer's input, per feature, before the query projection. Default false (the paper's layer). Early
    /// in training a few directions of the residual stream carry nearly all its variance, and the queries, linear in the
    /// input, inherit that; scaling each input feature to unit variance gives the others a say in retrieval (issue 11).
    /// </summary>
    public bool InputBatchNorm { get; set; }

    /// <summary>
    /// With <see cref="QueryBatchNorm"/> on, normalise each head's query by its full covariance (ZCA whitening) instead of
    /// each feature's variance alone. Default false (the paper's batch norm). Batch norm leaves the query features as
    /// correlated as the layer's input; when a few input directions carry nearly all the variance, every query points the
    /// same few ways and a few experts serve most tokens. Costs 2·h·d_key² FLOPs per token and h·d_key² running statistics.
    /// </summary>
    public bool QueryWhitening { get; set; }

    /// <summary>
    /// Score queries against unit-length sub-keys (their direction only). Default false (the paper's dot product). With raw
    /// sub-keys the longest win the top-k for most queries, so a few experts are retrieved far more than the rest.
    /// </summary>
    public bool NormalizeSubKeys { get; set; }

    /// <summary>How the top-k scores of a head become router weights. Default softmax over the top-k.</summary>
    public ScoreActivation ScoreActivation { get; set; } = ScoreActivation.Softmax;

    /// <summary>
    /// Produce sparse gradients for the expert/value tables (only the retrieved rows), instead of dense N×d
    /// gradients. Needed for N = 1024² on a laptop; optimizers then must accept sparse gradients. Default false.
    /// </summary>
    public bool SparseGradients { get; set; }

    /// <summary>
    /// Which kernels retrieve (and, in PEER, compute) the experts. Default <see cref="PeerKernels.Auto"/>: the native
    /// kernels of Peer.Native when they load and the tensors are float32 on the CPU, else composed TorchSharp
    /// operations. Both give the same outputs and gradients (to float rounding).
    /// </summary>
    public PeerKernels Kernels { get; set; } = PeerKernels.Auto;

    /// <summary>The largest <see cref="KeyDimension"/> that <see cref="QueryWhitening"/> accepts.</summary>
    internal const int MaxWhitenedKeyDimension = 1024;

    /// <summary>A copy of every option, so a model owns its settings.</summary>
    public virtual ProductKeyOptions Clone() => (ProductKeyOptions)MemberwiseClone();

    /// <summary>sqrt(N): the number of sub-keys in each of the two halves.</summary>
    public int SubKeys => (int)Math.Round(Math.Sqrt(Experts));

    /// <summary>Checks every option and throws an <see cref="ArgumentOutOfRangeException"/> naming the one that is wrong.</summary>
    public virtual void Validate()
    {
        if (Experts <= 0)
            throw new ArgumentOutOfRangeException(nameof(Experts), Experts, $"{nameof(Experts)} must be positive; got {Experts}.");
        AtMost(Experts, LayerLimits.Experts, nameof(Experts));
        long n = (long)Math.Round(Math.Sqrt(Experts));
        if (n * n != Experts)
            throw new ArgumentOutOfRangeException(nameof(Experts), Experts,
                $"{nameof(Experts)} must be a perfect square (N = n², e.g. {n * n} or {(n + 1) * (n + 1)}); got {Experts}.");
        if (Heads <= 0)
            throw new ArgumentOutOfRangeException(nameof(Heads), Heads, $"{nameof(Heads)} must be at least 1; got {Heads}.");
        AtMost(Heads, LayerLimits.RetrievalHeads, nameof(Heads));
        if (TopK <= 0 || TopK > n)
            throw new ArgumentOutOfRangeException(nameof(TopK), TopK,
                $"{nameof(TopK)} must be between 1 and sqrt({nameof(Experts)}) = {n}; got {TopK}.");
        if (KeyDimension <= 0 || KeyDimension % 2 != 0)
            throw new ArgumentOutOfRangeException(nameof(KeyDimension), KeyDimension,
                $"{nameof(KeyDimension)} must be a positive even number (the query is split into two halves); got {KeyDimension}.");
        AtMost(KeyDimension, LayerLimits.KeyDimension, nameof(KeyDimension));
        if (QueryWhitening && !QueryBatchNorm)
            throw new ArgumentException($"{nameof(QueryWhitening)} replaces the query batch norm's per-feature scaling, so it needs {nameof(QueryBatchNorm)} = true; got {nameof(QueryBatchNorm)} = false.", nameof(QueryWhitening));
        if (QueryWhitening && KeyDimension > MaxWhitenedKeyDimension)
            throw new ArgumentOutOfRangeException(nameof(KeyDimension), KeyDimension,
                $"{nameof(QueryWhitening)} keeps a {nameof(KeyDimension)}² covariance per head and decomposes it every step, so it takes {nameof(KeyDimension)} ≤ {MaxWhitenedKeyDimension}; got {KeyDimension}.");
        if (!Enum.IsDefined(Kernels))
            throw new ArgumentOutOfRangeException(nameof(Kernels), Kernels, $"Unknown {nameof(Kernels)} {Kernels}.");
        if (!Enum.IsDefined(ScoreActivation))
            throw new ArgumentOutOfRangeException(nameof(ScoreActivation), ScoreActivation,
                $"Unknown {nameof(ScoreActivation)} {ScoreActivation}.");
    }
}
