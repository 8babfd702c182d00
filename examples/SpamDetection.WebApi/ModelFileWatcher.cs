using Microsoft.Extensions.Options;

namespace SpamDetection.WebApi;

/// <summary>
/// Reloads the model when its file changes. The file is polled (last write time and length) rather than watched with
/// FileSystemWatcher: polling sees a rename over the file (SaveAtomically, `mv`) the same way on every file system,
/// including network and container mounts where change notifications do not arrive, and costs one stat per interval.
/// </summary>
internal sealed class ModelFileWatcher(ModelServer server, IOptions<ModelServingOptions> options,
    ILogger<ModelFileWatcher> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.Value.ModelPollInterval);
        ModelFileStamp? pending = null;
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            var now = ModelFileStamp.Of(server.ModelPath);
            if (now is null || now == server.Current.File || now == server.LastReloadError?.File)
            {
                pending = null;
                continue;
            }
            // Debounced: loaded only once two polls in a row see the same file, so a writer that saves in place (ML.NET's
            // own Model.Save truncates and rewrites) is not read halfway; an atomic rename is loaded one interval later.
            if (now != pending)
            {
                pending = now;
                continue;
            }
            pending = null;
            logger.LogInformation("{Path} changed ({Length} bytes, written {Written:O}); reloading", server.ModelPath, now.Value.Length,
                now.Value.LastWriteUtc);
            // Loading is CPU work of a second or so; it runs here, off the request threads, while the old model serves.
            server.Reload();
        }
    }
}
