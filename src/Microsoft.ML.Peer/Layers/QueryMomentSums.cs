using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// Σq and Σq² (float64, per feature) of a router's raw queries over several batches: the exact mean and variance of all
/// of them, where BN's running statistics are an exponential average dominated by the last batches.
/// </summary>
internal sealed class QueryMomentSums : IDisposable
{
    private Tensor? _sum, _squares;

    public long Count { get; private set; }

    public void Add(Tensor queries)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var q = queries.detach().reshape(queries.shape[0], -1).to(ScalarType.Float64);
        _sum ??= zeros(q.shape[1], dtype: ScalarType.Float64, device: q.device).DetachFromDisposeScope();
        _squares ??= zeros(q.shape[1], dtype: ScalarType.Float64, device: q.device).DetachFromDisposeScope();
        _sum.add_(q.sum(dim: 0));
        _squares.add_(q.square().sum(dim: 0));
        Count += q.shape[0];
    }

    /// <summary>Mean and unbiased variance per feature (at least two rows needed).</summary>
    public (Tensor Mean, Tensor Variance) MeanAndVariance()
    {
        if (Count < 2 || _sum is null || _squares is null) throw new InvalidOperationException("At least two query rows are needed for a variance.");
        var mean = _sum / Count;
        var variance = ((_squares - Count * mean.square()) / (Count - 1)).clamp_min(0);
        return (mean, variance);
    }

    public void Dispose()
    {
        _sum?.Dispose();
        _squares?.Dispose();
        _sum = _squares = null;
        Count = 0;
    }
}
