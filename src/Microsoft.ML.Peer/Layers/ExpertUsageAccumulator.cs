using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// Accumulates router weights per expert while <see cref="Enabled"/>. Off by default, so training
/// pays nothing for it; its one N-sized buffer is telemetry, never part of the autograd graph.
/// </summary>
public sealed class ExpertUsageAccumulator : IDisposable
{
    private readonly int _experts;
    private Tensor? _weights;   // float64 [N], created on first use
    private long _retrievals;

    public ExpertUsageAccumulator(int experts) => _experts = experts;

    /// <summary>Whether forward passes add their router weights. Set it for an evaluation pass.</summary>
    public bool Enabled { get; set; }

    /// <summary>Clears the accumulated weights.</summary>
    public void Reset()
    {
        _weights?.Dispose();
        _weights = null;
        _retrievals = 0;
    }

    internal void Add(Tensor indices, Tensor gates)
    {
        if (!Enabled) return;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        _weights ??= zeros(_experts, dtype: ScalarType.Float64, device: indices.device).DetachFromDisposeScope();
        _weights.index_add_(0, indices.reshape(-1), gates.detach().reshape(-1).to(ScalarType.Float64), 1);
        _retrievals += indices.numel();
    }

    /// <summary>Usage and unevenness of what has been accumulated since the last <see cref="Reset"/>.</summary>
    public ExpertUsage Compute()
    {
        if (_weights is null || _retrievals == 0)
            return new ExpertUsage(_experts, 0, 0, double.NaN);
        using var scope = NewDisposeScope();
        var total = _weights.sum().item<double>();
        var used = _weights.gt(0).sum().item<long>();
        var z = _weights / total;
        var positive = z.masked_select(z.gt(0));
        var entropyTerm = (positive * positive.log()).sum().item<double>();
        return new ExpertUsage(_experts, _retrievals, (double)used / _experts, Math.Log(_experts) + entropyTerm);
    }

    public void Dispose() => Reset();
}
