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
public abstract class PeerTransformerBase<TModel> : ITransformer, ICanSaveModel, IDisposable where TModel : torch.nn.Module
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

    /// <summary>The mapping that appends this transformer's columns to rows whose text is input column <paramref name="textIndex"/>.</summary>
    private protected abstract ColumnAppendingMapper CreateMapper(DataViewSchema inputSchema, int textIndex);

    /// <summary>The format's signature and versions.</summary>
    private protected abstract VersionInfo FormatVersion { get; }

    /// <summary>The model's options, saved as JSON.</summary>
    private protected abstract object SavedOptions { get; }

    /// <summary>Writes what follows the text column in the transformer's own stream.</summary>
    private protected abstract void SaveHeader(ModelSaveContext ctx);

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ctx.CheckAtModel();
        ctx.SetVersionInfo(FormatVersion);
        ctx.SaveNonEmptyString(TextColumnName);
        SaveHeader(ctx);
        PeerModelPersistence.SaveJson(ctx, SavedOptions);
        PeerModelPersistence.SaveTokenizer(ctx, Tokenizer);
        PeerModelPersistence.SaveWeights(ctx, Model);
    }

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing)
    {
        if (disposing) Model.Dispose();
    }

    private ColumnAppendingMapper MakeMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return CreateMapper(inputSchema, SchemaChecks.TextColumn(inputSchema, TextColumnName).Index);
    }
}
