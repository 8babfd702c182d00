using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// Accumulates router weights per expert, and the first and second moments of the layer's inputs and queries, while
/// <see cref="Enabled"/>. Off by default, so training pays nothing for it; its buffers (N router weights, d² and
/// (h·d_key)² moments) are telemetry, never part of the autograd graph.
/// </summary>
public sealed class ExpertUsageAccumulator : IDisposable
{
    private readonly int _experts;
    private Tensor? _weights;   // float64 [N], created on first use
    private readonly Moments _inputs = new(), _queries = new();
    private long _retrievals;

    public ExpertUsageAccumulator(int experts) => _experts = experts;

    /// <summary>Whether forward passes add their router weights. Set it for an evaluation pass.</summary>
    public bool Enabled { get; set; }

    /// <summary>Clears the accumulated weights.</summary>
    public void Reset()
    {
        _weights?.Dispose();
        _weights = null;
        _inputs.Reset();
        _queries.Reset();
        _retrievals = 0;
    }

    internal void Add(Tensor inputs, Tensor queries, Tensor indices, Tensor gates)
    {
        if (!Enabled) return;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        _weights ??= zeros(_experts, dtype: ScalarType.Float64, device: indices.device).DetachFromDisposeScope();
        _weights.index_add_(0, indices.reshape(-1), gates.detach().reshape(-1).to(ScalarType.Float64), 1);
        _inputs.Add(inputs.detach().reshape(inputs.shape[0], -1));
        _queries.Add(queries.detach().reshape(queries.shape[0], -1));
        _retrievals += indices.numel();
    }

    /// <summary>Usage, unevenness, concentration and input/query rank of what has been accumulated since the last
    /// <see cref="Reset"/>.</summary>
    public ExpertUsage Compute()
    {
        if (_weights is null || _retrievals == 0)
            return new ExpertUsage(_experts, 0, 0, double.NaN, double.NaN, double.NaN, double.NaN);
        using var scope = NewDisposeScope();
        var total = _weights.sum().item<double>();
        var used = _weights.gt(0).sum().item<long>();
        var z = _weights / total;
        var positive = z.masked_select(z.gt(0));
        var entropyTerm = (positive * positive.log()).sum().item<double>();
        int top = Math.Max(1, (int)Math.Ceiling(_experts / 100.0));
        var topShare = z.topk(top).values.sum().item<double>();
        return new ExpertUsage(_experts, _retrievals, (double)used / _experts, Math.Log(_experts) + entropyTerm,
            topShare, _inputs.EffectiveRank(), _queries.EffectiveRank());
    }

    public void Dispose() => Reset();

    /// <summary>Running Σx and Σxxᵀ (float64) of row vectors, for their covariance.</summary>
    private sealed class Moments
    {
        private Tensor? _sum, _outer;
        private long _count;

        public void Reset()
        {
            _sum?.Dispose();
            _outer?.Dispose();
            _sum = _outer = null;
            _count = 0;
        }

        public void Add(Tensor rows)
        {
            // One batch's products in float32 (half the time of float64 at h·d_key = 1024), summed across batches in float64.
            var x = rows.to(ScalarType.Float32);
            _sum ??= zeros(x.shape[1], dtype: ScalarType.Float64, device: x.device).DetachFromDisposeScope();
            _outer ??= zeros(x.shape[1], x.shape[1], dtype: ScalarType.Float64, device: x.device).DetachFromDisposeScope();
            _sum.add_(x.sum(dim: 0).to(ScalarType.Float64));
            _outer.add_(x.t().matmul(x).to(ScalarType.Float64));
            _count += x.shape[0];
        }

        /// <summary>exp(−Σ p log p) over the covariance's eigenvalues p (normalised to sum 1); NaN before two rows.</summary>
        public double EffectiveRank()
        {
            if (_count < 2 || _sum is null || _outer is null) return double.NaN;
            using var scope = NewDisposeScope();
            var mean = _sum / _count;
            var covariance = (_outer - _count * mean.outer(mean)) / (_count - 1);
            var eigenvalues = linalg.eigvalsh(covariance).clamp_min(0);
            double trace = eigenvalues.sum().item<double>();
            if (!(trace > 0)) return 1;
            var p = eigenvalues / trace;
            var nonzero = p.masked_select(p.gt(0));
            return Math.Exp(-(nonzero * nonzero.log()).sum().item<double>());
        }
    }
}
