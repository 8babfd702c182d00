using Microsoft.Extensions.ObjectPool;
using Microsoft.ML;
using Microsoft.ML.Data;
using static SpamDetection.SpamModel;

namespace SpamDetection.WebApi;

/// <summary>
/// One loaded model and the prediction engines over it. Requests hold a reference while they score; the server holds one
/// while the model is current. The last reference released disposes the model, so a replaced model is freed only after
/// the requests still scoring on it have finished.
/// </summary>
public sealed class ServedModel
{
    private readonly ITransformer _model;
    private readonly ObjectPool<PredictionEngine<ModelInput, ModelOutput>> _engines;
    private readonly Action<ServedModel> _disposed;
    private int _references = 1;
    private bool _retired;

    internal ServedModel(MLContext mlContext, ITransformer model, ModelFileStamp file, int version, int retainedEngines,
        Action<ServedModel> disposed)
    {
        _model = model;
        _disposed = disposed;
        File = file;
        Version = version;
        LoadedAtUtc = DateTime.UtcNow;
        // DefaultObjectPoolProvider would make a DisposableObjectPool for an IDisposable engine, which disposes the
        // engines it does not keep; in ML.NET 5 an engine's Dispose disposes the model every engine here shares. So the
        // pool is built directly, and engines are never disposed one by one: the model is, once, when nobody uses it.
        _engines = new DefaultObjectPool<PredictionEngine<ModelInput, ModelOutput>>(new EnginePolicy(mlContext, model), retainedEngines);
        Labels = ScoreLabels(mlContext, model);
    }

    /// <summary>1 for the model loaded at start, then one more for each successful reload.</summary>
    public int Version { get; }

    /// <summary>The file this model was loaded from, as it was when it was opened.</summary>
    public ModelFileStamp File { get; }

    public DateTime LoadedAtUtc { get; }

    /// <summary>The class of each entry of <see cref="ModelOutput.Score"/> (the Score column's slot names).</summary>
    public IReadOnlyList<string> Labels { get; }

    /// <summary>Scores <paramref name="input"/> with a pooled engine; call it through a <see cref="ModelLease"/>, which keeps the model
    /// alive.</summary>
    public ModelOutput Predict(ModelInput input)
    {
        var engine = _engines.Get();
        try
        {
            return engine.Predict(input);
        }
        finally
        {
            _engines.Return(engine);
        }
    }

    /// <summary>Takes a reference, unless the model is already disposed (it was replaced and its last request ended).</summary>
    internal bool TryAcquire()
    {
        int seen = Volatile.Read(ref _references);
        while (seen > 0)
        {
            int before = Interlocked.CompareExchange(ref _references, seen + 1, seen);
            if (before == seen) return true;
            seen = before;
        }
        return false;
    }

    /// <summary>Replaced by a newer model: gives the server's reference back.</summary>
    internal void Retire()
    {
        Volatile.Write(ref _retired, true);
        Release();
    }

    internal bool IsRetired => Volatile.Read(ref _retired);

    /// <summary>Gives a reference back; the last one disposes the model.</summary>
    internal void Release()
    {
        if (Interlocked.Decrement(ref _references) != 0) return;
        (_model as IDisposable)?.Dispose();
        _disposed(this);
    }

    private static string[] ScoreLabels(MLContext mlContext, ITransformer model)
    {
        var schema = model.GetOutputSchema(mlContext.Data.LoadFromEnumerable(Array.Empty<ModelInput>()).Schema);
        var score = schema.GetColumnOrNull("Score");
        if (score is null || !score.Value.HasSlotNames()) return [];
        VBuffer<ReadOnlyMemory<char>> names = default;
        score.Value.GetSlotNames(ref names);
        return names.DenseValues().Select(n => n.ToString()).ToArray();
    }

    private sealed class EnginePolicy(MLContext mlContext, ITransformer model)
        : IPooledObjectPolicy<PredictionEngine<ModelInput, ModelOutput>>
    {
        // An engine holds only its own buffers over the shared model, so making one on a pool miss is cheap.
        public PredictionEngine<ModelInput, ModelOutput> Create() => mlContext.Model.CreatePredictionEngine<ModelInput, ModelOutput>(model);

        public bool Return(PredictionEngine<ModelInput, ModelOutput> engine) => true;
    }
}

/// <summary>What identifies one version of the model file: its last write time and its length.</summary>
public readonly record struct ModelFileStamp(DateTime LastWriteUtc, long Length)
{
    /// <summary>The file at <paramref name="path"/> now, or null if there is none.</summary>
    public static ModelFileStamp? Of(string path)
    {
        var info = new FileInfo(path);
        return info.Exists ? new ModelFileStamp(info.LastWriteTimeUtc, info.Length) : null;
    }

    /// <summary>The file behind an open handle: the version actually read, even if the path is replaced meanwhile.</summary>
    public static ModelFileStamp Of(FileStream stream) =>
        new(System.IO.File.GetLastWriteTimeUtc(stream.SafeFileHandle), RandomAccess.GetLength(stream.SafeFileHandle));
}
