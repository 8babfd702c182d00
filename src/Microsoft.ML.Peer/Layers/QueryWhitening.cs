using Microsoft.ML.Peer.Native;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// Decorrelating query normalisation (<see cref="ProductKeyOptions.QueryWhitening"/>): each head's query, a group of d_key
/// features, is centred and multiplied by the inverse square root of its covariance (ZCA whitening), then scaled and
/// shifted per feature as batch norm does. Batch norm gives each feature unit variance but leaves the features as
/// correlated as the layer's input makes them; when a few directions of the input carry nearly all its variance, the
/// queries point the same few ways and a few sub-keys win for most tokens. Whitening spreads them over every direction.
/// Training whitens with the batch's statistics, held constant in the backward pass, and keeps running averages that
/// evaluation uses, as batch norm does.
/// </summary>
internal sealed class QueryWhitening : Module<Tensor, Tensor>
{
    // Ridge added to the covariance, relative to its mean eigenvalue: directions with less than this share of the
    // average variance are raised to it rather than to unit variance (float rounding would otherwise be amplified).
    internal const double RelativeRidge = 1e-3;
    private const double Momentum = 0.1;

    private readonly int _groups;
    private readonly int _groupSize;

    /// <param name="groups">Heads h: each is whitened on its own.</param>
    /// <param name="groupSize">Features per head (d_key).</param>
    public QueryWhitening(int groups, int groupSize) : base(TorchSharpRuntime.Prepared(nameof(QueryWhitening)))
    {
        if (groups <= 0) throw new ArgumentOutOfRangeException(nameof(groups), groups, "The number of heads must be positive.");
        if (groupSize <= 0) throw new ArgumentOutOfRangeException(nameof(groupSize), groupSize, "The key dimension must be positive.");
        _groups = groups;
        _groupSize = groupSize;
        int features = groups * groupSize;
        Weight = new Parameter(ones(features));
        Bias = new Parameter(zeros(features));
        RunningMean = zeros(features);
        RunningCovariance = eye(groupSize).expand(groups, groupSize, groupSize).contiguous();
        register_parameter("weight", Weight);
        register_parameter("bias", Bias);
        register_buffer("running_mean", RunningMean);
        register_buffer("running_covariance", RunningCovariance);
    }

    /// <summary>Per-feature scale applied after whitening, [h·d_key].</summary>
    public Parameter Weight { get; }

    /// <summary>Per-feature shift applied after whitening, [h·d_key].</summary>
    public Parameter Bias { get; }

    /// <summary>Running mean of the raw queries, [h·d_key].</summary>
    public Tensor RunningMean { get; }

    /// <summary>Running covariance of each head's raw query about <see cref="RunningMean"/>, [h, d_key, d_key].</summary>
    public Tensor RunningCovariance { get; }

    /// <summary>
    /// Queries [T, h·d_key] → whitened queries. Training with two rows or more uses the batch's statistics and updates the
    /// running ones; otherwise the running statistics are used.
    /// </summary>
    public override Tensor forward(Tensor queries)
    {
        bool batch = training && queries.shape[0] > 1;
        return Normalize(queries, batch, updateRunning: batch);
    }

    /// <summary>Whitens with the batch's own statistics (<paramref name="batchStatistics"/>) or the running ones.</summary>
    public Tensor Normalize(Tensor queries, bool batchStatistics, bool updateRunning = false)
    {
        if (queries.dim() != 2 || queries.shape[1] != _groups * _groupSize)
            throw new ArgumentException(
                $"Queries must have shape [tokens, {_groups * _groupSize}]; got [{string.Join(", ", queries.shape)}].", nameof(queries));
        using var scope = NewDisposeScope();
        Tensor mean, covariance;
        using (no_grad())
        {
            if (batchStatistics && queries.shape[0] > 1)
            {
                (mean, covariance) = BatchStatistics(queries.detach(), unbiased: false);
                if (updateRunning)
                {
                    // The running covariance is the batch's scatter about the running mean, not about the batch's own mean:
                    // evaluation centres on the running mean, and a whitened direction of small variance turns even a small
                    // offset of the mean into one large component shared by every query, which then all retrieve alike.
                    var (_, unbiased) = BatchStatistics(queries.detach(), unbiased: true);
                    RunningMean.mul_(1 - Momentum).add_(mean.to(RunningMean.dtype), alpha: Momentum);
                    var offset = (mean - RunningMean.to(mean.dtype)).view(_groups, _groupSize);
                    var scatter = unbiased + offset.unsqueeze(2) * offset.unsqueeze(1);
                    RunningCovariance.mul_(1 - Momentum).add_(scatter.to(RunningCovariance.dtype), alpha: Momentum);
                }
            }
            else
            {
                (mean, covariance) = (RunningMean.clone(), RunningCovariance.clone());
            }
        }
        var whitening = InverseSquareRoot(covariance).to(queries.dtype);                             // [h, g, g], constant
        var centred = (queries - mean.to(queries.dtype)).view(-1, _groups, _groupSize).transpose(0, 1);  // [h, T, g]
        var white = matmul(centred, whitening).transpose(0, 1).reshape(queries.shape[0], -1);      // symmetric: x·M = (M·x)ᵀ
        return (white * Weight + Bias).MoveToOuterDisposeScope();
    }

    /// <summary>Sets the running statistics to the given mean [h·d_key] and per-head covariance [h, d_key, d_key].</summary>
    public void SetStatistics(Tensor mean, Tensor covariance)
    {
        using var noGrad = no_grad();
        RunningMean.copy_(mean.to(RunningMean.dtype));
        RunningCovariance.copy_(covariance.to(RunningCovariance.dtype));
    }

    private (Tensor Mean, Tensor Covariance) BatchStatistics(Tensor queries, bool unbiased)
    {
        var q = queries.to(ScalarType.Float64);
        var mean = q.mean(new long[] { 0 });
        var centred = (q - mean).view(-1, _groups, _groupSize).transpose(0, 1);                    // [h, T, g]
        var covariance = matmul(centred.transpose(1, 2), centred) / (q.shape[0] - (unbiased ? 1 : 0));
        return (mean, covariance);
    }

    // (C + ridge·I)^(-1/2) per head, by eigendecomposition in float64; ridge = RelativeRidge × the mean eigenvalue.
    private Tensor InverseSquareRoot(Tensor covariance)
    {
        using var noGrad = no_grad();
        var c = covariance.to(ScalarType.Float64);
        var ridge = c.diagonal(dim1: 1, dim2: 2).mean(new long[] { 1 }, keepdim: true).clamp_min(1e-12) * RelativeRidge;   // [h, 1]
        var (values, vectors) = linalg.eigh(c);
        var scale = (values.clamp_min(0) + ridge).rsqrt();                                          // [h, g]
        return matmul(vectors * scale.unsqueeze(1), vectors.transpose(1, 2));
    }
}
