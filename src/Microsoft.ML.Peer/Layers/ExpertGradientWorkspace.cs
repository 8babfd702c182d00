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
    internal (Tensor Down, Tensor Up) Rows(long rows, long dimension)
    {
        if (_down is null || _down.shape[0] < rows || _down.shape[1] != dimension)
        {
            Dispose();
            _down = empty(rows, dimension).DetachFromDisposeScope();
            _up = empty(rows, dimension).DetachFromDisposeScope();
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
