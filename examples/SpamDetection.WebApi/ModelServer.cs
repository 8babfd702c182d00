using Microsoft.Extensions.Options;
using Microsoft.ML;
using static SpamDetection.SpamModel;

namespace SpamDetection.WebApi;

/// <summary>Where the model is and how the server watches it (configuration keys of the same names).</summary>
public sealed class ModelServingOptions
{
    /// <summary>The saved model; relative paths are taken from the working directory, as the SpamDetection example saves it.</summary>
    public string ModelPath { get; set; } = SpamModel.MLNetModelPath;

    /// <summary>How often the file's last write time and length are checked; a change is loaded once two checks agree.</summary>
    public TimeSpan ModelPollInterval { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>Engines kept in the pool between requests (more are made under load and dropped afterwards).</summary>
    public int RetainedEngines { get; set; } = Environment.ProcessorCount * 2;
}

/// <summary>A reload that did not replace the model: when, which file, and why.</summary>
public sealed record ReloadError(DateTime AtUtc, ModelFileStamp File, string Message);

/// <summary>
/// Serves the current <see cref="ServedModel"/> and replaces it when the file changes. A reload loads and tries the new
/// model completely before it is swapped in with one reference exchange; requests that already hold the old model finish
/// on it, and a file that does not load leaves the old model serving.
/// </summary>
public sealed class ModelServer : IDisposable
{
    private readonly MLContext _mlContext = new();
    private readonly ModelServingOptions _options;
    private readonly ILogger<ModelServer> _logger;
    private readonly object _reloading = new();
    private ServedModel? _current;
    private volatile ReloadError? _lastReloadError;
    private int _reloads;
    private int _failedReloads;
    private int _retiredInUse;

    public ModelServer(IOptions<ModelServingOptions> options, ILogger<ModelServer> logger)
    {
        _options = options.Value;
        _logger = logger;
        ModelPath = Path.GetFullPath(_options.ModelPath);
        // Loaded once, at start: a service with no model to serve should fail to start, not answer 500s.
        _current = Load(version: 1);
        _logger.LogInformation("Serving {Path} ({Labels})", ModelPath, string.Join(", ", _current.Labels));
    }

    public string ModelPath { get; }

    /// <summary>The model serving now.</summary>
    public ServedModel Current => Volatile.Read(ref _current) ?? throw new ObjectDisposedException(nameof(ModelServer));

    /// <summary>The last reload that failed, until a later one succeeds.</summary>
    public ReloadError? LastReloadError => _lastReloadError;

    public int Reloads => Volatile.Read(ref _reloads);

    public int FailedReloads => Volatile.Read(ref _failedReloads);

    /// <summary>Replaced models that requests still hold; each is disposed when its last request ends.</summary>
    public int RetiredModelsInUse => Volatile.Read(ref _retiredInUse);

    /// <summary>
    /// The current model, kept alive (not disposed, even if replaced) until the lease is disposed. Every request scores
    /// through one; a reload's old model is disposed when its last lease ends.
    /// </summary>
    public ModelLease Rent()
    {
        while (true)
        {
            var model = Current;
            // Fails only if this model was replaced and its last lease ended in between; the next read sees its successor.
            if (model.TryAcquire()) return new ModelLease(model);
        }
    }

    /// <summary>Scores <paramref name="input"/> with the current model.</summary>
    public (ModelOutput Output, ServedModel Model) Predict(ModelInput input)
    {
        using var lease = Rent();
        return (lease.Model.Predict(input), lease.Model);
    }

    /// <summary>
    /// Loads the file as it is now and, if it loads and scores, makes it the current model. Never throws for a bad
    /// file: the error is kept for /health and the old model goes on serving. False if the model was not replaced.
    /// </summary>
    public bool Reload()
    {
        lock (_reloading)
        {
            var old = Volatile.Read(ref _current);
            if (old is null) return false;
            ModelFileStamp? file = null;
            try
            {
                var next = Load(old.Version + 1, stamp => file = stamp);
                Interlocked.Increment(ref _retiredInUse);
                Volatile.Write(ref _current, next);
                old.Retire();
                Interlocked.Increment(ref _reloads);
                _lastReloadError = null;
                _logger.LogInformation("Reloaded {Path}: version {Version} ({Labels})", ModelPath, next.Version,
                    string.Join(", ", next.Labels));
                return true;
            }
            catch (Exception e)
            {
                Interlocked.Increment(ref _failedReloads);
                _lastReloadError =
                    new ReloadError(DateTime.UtcNow, file ?? ModelFileStamp.Of(ModelPath) ?? default, $"{e.GetType().Name}: {e.Message}");
                _logger.LogWarning(e, "Reloading {Path} failed; version {Version} goes on serving", ModelPath, old.Version);
                return false;
            }
        }
    }

    private ServedModel Load(int version, Action<ModelFileStamp>? opened = null)
    {
        ITransformer model;
        ModelFileStamp stamp;
        // Read through one handle: if the file is replaced while it loads, this is still one whole version of it.
        using (var stream = new FileStream(ModelPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete))
        {
            stamp = ModelFileStamp.Of(stream);
            opened?.Invoke(stamp);
            model = _mlContext.Model.Load(stream, out _);
        }
        try
        {
            var served = new ServedModel(_mlContext, model, stamp, version, _options.RetainedEngines, Retired);
            // Score once before serving: a model of another shape (no Text input, no PredictedLabel/Score output) or one
            // that fails when run is refused here rather than on a request.
            var probe = served.Predict(new ModelInput { Text = "Subject: probe" });
            if (probe.Score.Length == 0 || (served.Labels.Count != 0 && probe.Score.Length != served.Labels.Count))
                throw new InvalidDataException($"the model scores {probe.Score.Length} classes but names {served.Labels.Count}");
            return served;
        }
        catch
        {
            (model as IDisposable)?.Dispose();
            throw;
        }
    }

    private void Retired(ServedModel model)
    {
        if (model.IsRetired) Interlocked.Decrement(ref _retiredInUse);
    }

    public void Dispose()
    {
        // The host stops taking requests and waits for those in flight before it disposes its services.
        Interlocked.Exchange(ref _current, null)?.Release();
    }
}

/// <summary>A reference to a <see cref="ServedModel"/> that keeps it from being disposed until this is disposed.</summary>
public sealed class ModelLease : IDisposable
{
    private int _released;

    internal ModelLease(ServedModel model) => Model = model;

    public ServedModel Model { get; }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0) Model.Release();
    }
}
