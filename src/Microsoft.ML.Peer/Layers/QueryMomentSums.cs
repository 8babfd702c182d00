using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// Σq and Σq² (float64, per feature) of a router's raw queries over several batches: the exact mean and variance of all
/// of them, where BN's running statistics are an exponential average dominated by the last batches. With a group size,
/// also Σq_g q_gᵀ of each group of that many features (a head's query), for <see cref="QueryWhitening"/>.
/// </summary>
internal sealed class QueryMomentSums : IDisposable
{
    private readonly int _groupSize;
    private Tensor? _sum, _squares, _products;

    /// <param name="groupSize">Features per group whose cross products are summed; 0 sums none.</param>
    public QueryMomentSums(int groupSize = 0)
    {
        if (groupSize < 0) throw new ArgumentOutOfRangeException(nameof(groupSize), groupSize, "The group size cannot be negative.");
        _groupSize = groupSize;
    }

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
        if (_groupSize > 0)
        {
            if (q.shape[1] % _groupSize != 0)
                throw new ArgumentException($"{q.shape[1]} query features do not split into groups of {_groupSize}.", nameof(queries));
            var groups = q.view(q.shape[0], -1, _groupSize).transpose(0, 1);                        // [G, T, g]
            _products ??= zeros(groups.shape[0], _groupSize, _groupSize, dtype: ScalarType.Float64,
                device: q.device).DetachFromDisposeScope();
            _products.add_(matmul(groups.transpose(1, 2), groups));
        }
        Count += q.shape[0];
    }

    /// <summary>Mean and unbiased variance per feature (at least two rows needed).</summary>
    public (Tensor Mean, Tensor Variance) MeanAndVariance()
    {
        if (Count < 2 || _sum is null || _squares is null)
            throw new InvalidOperationException("At least two query rows are needed for a variance.");
        var mean = _sum / Count;
        var variance = ((_squares - Count * mean.square()) / (Count - 1)).clamp_min(0);
        return (mean, variance);
    }

    /// <summary>Mean per feature and unbiased covariance of each group, [G, g, g] (a group size and two rows needed).</summary>
    public (Tensor Mean, Tensor Covariance) MeanAndGroupCovariance()
    {
        if (_groupSize == 0)
            throw new InvalidOperationException("These sums were made without a group size, so they hold no cross products.");
        if (Count < 2 || _sum is null || _products is null)
            throw new InvalidOperationException("At least two query rows are needed for a covariance.");
        var mean = _sum / Count;
        var groupMean = mean.view(-1, _groupSize);                                                      // [G, g]
        var covariance = (_products - Count * groupMean.unsqueeze(2) * groupMean.unsqueeze(1)) / (Count - 1);
        return (mean, covariance);
    }

    public void Dispose()
    {
        _sum?.Dispose();
        _squares?.Dispose();
        _products?.Dispose();
        _sum = _squares = _products = null;
        Count = 0;
    }
}
