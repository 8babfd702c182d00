using Microsoft.ML.Data;
using Microsoft.ML.Peer.Data;
using Microsoft.ML.Runtime;
using TorchSharp;

namespace Microsoft.ML.Peer;

/// <summary>
/// What the PEER transformers share: a TorchSharp model kept in evaluation mode, the tokenizer it was trained with, the
/// input text column, the ITransformer plumbing over a row-to-row mapping, and the parts of the saved model they have in
/// common (the text column, the model's options, the tokenizer and the weights).
/// </summary>
/// <typeparam name="TModel">The TorchSharp model.</typeparam>
public abstract partial class PeerTransformerBase<TModel> : ITransformer, ICanSaveModel, IDisposable where TModel : torch.nn.Module
{
    private protected PeerTransformerBase(IHostEnvironment env, string name, TModel model, CompactTokenizer tokenizer, string textColumnName)
    {
        Host = env.Register(name);
        Model = model;
        Model.eval();
        Tokenizer = tokenizer;
        TextColumnName = textColumnName;
    }

    private protected IHost Host { get; }

    /// <summary>The underlying TorchSharp model (evaluation mode). Owned by this transformer.</summary>
    public TModel Model { get; }

    /// <summary>The tokenizer the model was trained with (built from the training texts).</summary>
    public CompactTokenizer Tokenizer { get; }

    /// <summary>The input text column.</summary>
    public string TextColumnName { get; }

    public bool IsRowToRowMapper => true;

    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => MakeMapper(inputSchema).OutputSchema;

    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => MakeMapper(inputSchema);

    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        return new ColumnAppendingDataView(input, MakeMapper(input.Schema));
    }

    private readonly object _lifetime = new();
    private int _callsInFlight;
    private bool _disposed;

    /// <summary>
    /// Marks a call that runs the model, until the returned scope is disposed. <see cref="Dispose()"/> waits for every such
    /// call to end before it frees the native model, and none starts after it (ObjectDisposedException): scoring threads
    /// and Dispose can never meet inside libtorch.
    /// </summary>
    private protected ModelCall UseModel()
    {
        lock (_lifetime)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _callsInFlight++;
        }
        return new ModelCall(this);
    }

    private protected readonly struct ModelCall(PeerTransformerBase<TModel> owner) : IDisposable
    {
        public void Dispose()
        {
            lock (owner._lifetime)
            {
                if (--owner._callsInFlight == 0) Monitor.PulseAll(owner._lifetime);
            }
        }
    }

    /// <summary>The mapping that appends this transformer's columns to rows whose text is input column <paramref name="textIndex"/>.</summary>
    private protected abstract ColumnAppendingMapper CreateMapper(DataViewSchema inputSchema, int textIndex);

    /// <summary>The format's signature and versions.</summary>
    private protected abstract VersionInfo FormatVersion { get; }

    /// <summary>The model's options, saved as JSON.</summary>
    private protected abstract object SavedOptions { get; }

    /// <summary>Writes what follows the text column in the transformer's own stream.</summary>
    private protected abstract void SaveHeader(ModelSaveContext ctx);

    /// <summary>The digest of the header fields (text column included), recorded with the streams' checksums.</summary>
    private protected abstract string HeaderDigest { get; }

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        // A disposed model has no weights left to write: saving it would replace a good file with an empty model.
        using var call = UseModel();
        Training.FiniteWeights.Ensure(Model, "at save");
        ctx.CheckAtModel();
        ctx.SetVersionInfo(FormatVersion);
        ctx.SaveNonEmptyString(TextColumnName);
        SaveHeader(ctx);
        PeerModelPersistence.SaveModel(ctx, SavedOptions, Tokenizer, Model, HeaderDigest);
    }

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing)
    {
        if (!disposing) return;
        lock (_lifetime)
        {
            if (_disposed) return;
            _disposed = true;
            while (_callsInFlight > 0) Monitor.Wait(_lifetime);
        }
        Model.Dispose();
    }

    private ColumnAppendingMapper MakeMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        lock (_lifetime) ObjectDisposedException.ThrowIf(_disposed, this);
        return CreateMapper(inputSchema, SchemaChecks.TextColumn(inputSchema, TextColumnName).Index);
    }
}
