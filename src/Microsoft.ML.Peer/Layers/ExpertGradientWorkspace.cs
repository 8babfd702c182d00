using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// Row buffers for the expert tables' gradients, kept between steps: a fresh allocation of that size
/// (hundreds of MB at N = 1024²) costs more in first-touch page faults than the backward kernel itself.
/// </summary>
internal sealed class ExpertGradientWorkspace : IDisposable
{
    private Tensor? _down;
    private Tensor? _up;

    /// <summary>Views of the first <paramref name="rows"/> rows of each buffer, growing them when needed.</summary>
    /// <param name="rows">Rows needed now (the batch's unique experts).</param>
    /// <param name="dimension">Row length.</param>
    /// <param name="maxRows">The most this batch could need (its slots, at most N): growth stops there.</param>
    internal (Tensor Down, Tensor Up) Rows(long rows, long dimension, long maxRows)
    {
        if (_down is null || _down.shape[0] < rows || _down.shape[1] != dimension)
        {
            // The unique experts of a batch creep up as the router learns to spread them (200,474 → 201,238 over a few
            // steps of the peer-layer benchmark), and a buffer sized exactly was then reallocated at nearly every step,
            // paying first-touch faults on 2 × 205 MB: 130 ms of a 200 ms backward. An eighth of headroom ends that.
            long capacity = Math.Max(rows, Math.Min(maxRows, rows + rows / 8));
            Dispose();
            _down = empty(capacity, dimension).DetachFromDisposeScope();
            _up = empty(capacity, dimension).DetachFromDisposeScope();
        }
        return (_down.narrow(0, 0, rows), _up!.narrow(0, 0, rows));
    }

    public void Dispose()
    {
        _down?.Dispose();
        _up?.Dispose();
        _down = _up = null;
    }
}
