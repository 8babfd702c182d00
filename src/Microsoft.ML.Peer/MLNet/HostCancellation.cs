using Microsoft.ML.Runtime;
namespace Microsoft.ML.Peer;

/// <summary>
/// A CancellationToken that fires when MLContext.CancelExecution() is called on the environment. ML.NET exposes
/// cancellation only as a flag (ICancelable.IsCanceled), so it is polled; 50 ms is far shorter than a training step.
/// </summary>
internal sealed class HostCancellation : IDisposable
{
    private readonly CancellationTokenSource _source = new();
    private readonly Timer? _timer;

    public HostCancellation(IHostEnvironment env)
    {
        if (env is ICancelable cancelable)
        {
            if (cancelable.IsCanceled) _source.Cancel();
            else _timer = new Timer(_ => { if (cancelable.IsCanceled) _source.Cancel(); }, null, 50, 50);
        }
    }

    public CancellationToken Token => _source.Token;

    public void Dispose()
    {
        _timer?.Dispose();
        _source.Dispose();
    }
}
