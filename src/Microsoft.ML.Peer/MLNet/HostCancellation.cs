using Microsoft.ML.Runtime;
namespace Microsoft.ML.Peer;

/// <summary>
/// A CancellationToken that fires when the user's token is cancelled or MLContext.CancelExecution() is called on the
/// environment. ML.NET exposes its cancellation only as a flag (ICancelable.IsCanceled), so that one is polled; 50 ms
/// is far shorter than a training step.
/// </summary>
internal sealed class HostCancellation : IDisposable
{
    private readonly CancellationTokenSource _source;
    private readonly Timer? _timer;

    public HostCancellation(IHostEnvironment env, CancellationToken userToken)
    {
        _source = CancellationTokenSource.CreateLinkedTokenSource(userToken);
        if (env is ICancelable cancelable)
        {
            if (cancelable.IsCanceled) _source.Cancel();
            else _timer = new Timer(_ => { if (cancelable.IsCanceled) _source.Cancel(); }, null, 50, 50);
        }
    }

    public CancellationToken Token => _source.Token;

    /// <summary>Throws OperationCanceledException if either source asked to stop.</summary>
    public void ThrowIfCancelled() => _source.Token.ThrowIfCancellationRequested();

    public void Dispose()
    {
        _timer?.Dispose();
        _source.Dispose();
    }
}
