using Microsoft.ML.Peer.Native;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// The routing half shared by PEER and PKM: query network q = BN(W x + c), split into heads,
/// exact product-key top-k per head, router weights g over each head's top-k.
/// </summary>
public sealed class ProductKeyRouter : Module<Tensor, (Tensor Gates, Tensor Indices)>
{
    private readonly ProductKeyOptions _options;
    private readonly BatchNorm1d? input_norm;
    private readonly Linear query;
    private readonly BatchNorm1d? query_norm;
    private readonly QueryWhitening? query_whitening;
    private readonly ProductKeyRetriever retriever;

    public ProductKeyRouter(int inputDimension, ProductKeyOptions options) : base(TorchSharpRuntime.Prepared(nameof(ProductKeyRouter)))
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (inputDimension <= 0)
            throw new ArgumentOutOfRangeException(nameof(inputDimension), inputDimension, "The input dimension must be positive.");
        _options = options.Clone();
        input_norm = options.InputBatchNorm ? nn.BatchNorm1d(inputDimension) : null;
        query = nn.Linear(inputDimension, options.Heads * options.KeyDimension);
        // BatchNorm over the whole projected query, before the split into heads and halves (as in PKM).
        // With QueryWhitening, each head's query is decorrelated instead (batch norm's place and role).
        query_norm = options.QueryBatchNorm && !options.QueryWhitening ? nn.BatchNorm1d(options.Heads * options.KeyDimension) : null;
        query_whitening = options.QueryWhitening ? new QueryWhitening(options.Heads, options.KeyDimension) : null;
        retriever = new ProductKeyRetriever(options.SubKeys, options.KeyDimension, options.TopK, options.Kernels, options.NormalizeSubKeys);
        Usage = new ExpertUsageAccumulator(options.Experts);
        RegisterComponents();
    }

    /// <summary>Expert usage telemetry; enable it around an evaluation pass.</summary>
    public ExpertUsageAccumulator Usage { get; }

    public ProductKeyOptions Options => _options.Clone();

    /// <summary>The product-key retriever (its sub-keys are trainable parameters).</summary>
    public ProductKeyRetriever Retriever => retriever;

    /// <summary>The query projection W, c.</summary>
    public Linear QueryProjection => query;

    /// <summary>The query batch norm, or null when <see cref="ProductKeyOptions.QueryBatchNorm"/> is off.</summary>
    public BatchNorm1d? QueryNorm => query_norm;

    /// <summary>The query whitening, or null when <see cref="ProductKeyOptions.QueryWhitening"/> is off.</summary>
    internal QueryWhitening? QueryWhitening => query_whitening;

    /// <summary>Whether the queries are normalised (batch norm or whitening), so that their statistics can be re-estimated.</summary>
    internal bool NormalizesQueries => query_norm is not null || query_whitening is not null;

    /// <summary>The input batch norm, or null when <see cref="ProductKeyOptions.InputBatchNorm"/> is off.</summary>
    internal BatchNorm1d? InputNorm => input_norm;

    /// <summary>
    /// Statistics that normalise the queries in evaluation mode (training always uses the batch's). Set by an evaluation
    /// pass and restored after it.
    /// </summary>
    internal QueryNormStatistics EvaluationStatistics { get; set; } = QueryNormStatistics.Running;

    /// <summary>While set, every forward pass adds its raw (pre-norm) queries; see <see cref="QueryMomentSums"/>.</summary>
    internal QueryMomentSums? QueryMoments { get; set; }

    /// <summary>While set, every forward pass adds its raw inputs (for <see cref="ProductKeyOptions.InputBatchNorm"/>).</summary>
    internal QueryMomentSums? InputMoments { get; set; }

    /// <summary>Tokens [T, d] → router weights [T, h, k] and expert indices [T, h, k].</summary>
    public override (Tensor Gates, Tensor Indices) forward(Tensor tokens)
    {
        using var scope = NewDisposeScope();
        var x = tokens;
        if (input_norm is not null)
        {
            InputMoments?.Add(x);
            x = Normalize(input_norm, x);
        }
        var q = query.forward(x);
        QueryMoments?.Add(q);
        if (query_norm is not null) q = Normalize(query_norm, q);
        if (query_whitening is not null)
            q = query_whitening.training
                ? query_whitening.forward(q)
                : query_whitening.Normalize(q, EvaluationStatistics == QueryNormStatistics.Batch);
        q = q.view(tokens.shape[0], _options.Heads, _options.KeyDimension);
        var (scores, indices) = retriever.forward(q);
        var gates = _options.ScoreActivation switch
        {
            ScoreActivation.Softmax => F.softmax(scores, -1),
            ScoreActivation.Sigmoid => F.sigmoid(scores),
            _ => throw new InvalidOperationException($"Unknown score activation {_options.ScoreActivation}."),
        };
        Usage.Add(tokens, q, indices, gates);
        return (gates.MoveToOuterDisposeScope(), indices.MoveToOuterDisposeScope());
    }

    private Tensor Normalize(BatchNorm1d norm, Tensor rows) =>
        !norm.training && EvaluationStatistics == QueryNormStatistics.Batch && rows.shape[0] > 1
            ? NormalizeWithBatchStatistics(norm, rows)
            : NormalizeQueries(norm, rows);

    /// <summary>
    /// Query (or input) batch norm. A training batch of one row (a bag-of-embeddings classifier's last batch of one text, a TorchSharp
    /// user's single example) has no variance to measure, and BN's unbiased running variance would become 0/0 = NaN and
    /// poison every later evaluation; such a batch is normalised with the running statistics and leaves them unchanged.
    /// </summary>
    private static Tensor NormalizeQueries(BatchNorm1d norm, Tensor q)
    {
        if (!norm.training || q.shape[0] > 1) return norm.forward(q);
        norm.eval();
        try
        {
            return norm.forward(q);
        }
        finally
        {
            norm.train();
        }
    }

    // Batch norm with the batch's own (biased) variance, as training normalises, without touching the running statistics.
    private static Tensor NormalizeWithBatchStatistics(BatchNorm1d norm, Tensor q)
    {
        var mean = q.mean(new long[] { 0 }, keepdim: true);
        var variance = q.var(0, unbiased: false, keepdim: true);
        var normalized = (q - mean) / (variance + norm.eps).sqrt();
        return norm.weight is null ? normalized : normalized * norm.weight + norm.bias!;
    }

    /// <summary>
    /// Replaces the query norm's running mean and variance with those of the queries summed in <paramref name="moments"/>
    /// (the unbiased variance, as BN's running variance is); nothing happens without a query norm or without two rows.
    /// </summary>
    internal void SetQueryNormStatistics(QueryMomentSums moments)
    {
        SetStatistics(query_norm, moments);
        if (query_whitening is null || moments.Count < 2) return;
        using var scope = NewDisposeScope();
        var (mean, covariance) = moments.MeanAndGroupCovariance();
        query_whitening.SetStatistics(mean, covariance);
    }

    /// <summary>Moment sums fit for <see cref="SetQueryNormStatistics"/>: per-head cross products too where the queries are
    /// whitened.</summary>
    internal QueryMomentSums NewQueryMoments() => new(query_whitening is null ? 0 : _options.KeyDimension);

    /// <summary>As <see cref="SetQueryNormStatistics"/>, for the input batch norm.</summary>
    internal void SetInputNormStatistics(QueryMomentSums moments) => SetStatistics(input_norm, moments);

    private static void SetStatistics(BatchNorm1d? norm, QueryMomentSums moments)
    {
        ArgumentNullException.ThrowIfNull(moments);
        if (norm is null || moments.Count < 2) return;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (mean, variance) = moments.MeanAndVariance();
        norm.running_mean!.copy_(mean.to(norm.running_mean.dtype));
        norm.running_var!.copy_(variance.to(norm.running_var.dtype));
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) Usage.Dispose();
        base.Dispose(disposing);
    }
}
