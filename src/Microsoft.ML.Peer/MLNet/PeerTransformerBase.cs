using Microsoft.ML.Data;
using Microsoft.ML.Peer.Data;
using Microsoft.ML.Runtime;
using TorchSharp;

namespace Microsoft.ML.Peer;

/// <summary>
/// What the PEER transformers share: a TorchSharp model kept in evaluation mode, the tokenizer it was trained with, the
/// input text column, the row mapping (ML.NET's <see cref="RowToRowTransformerBase"/>: the input columns pass through, the
/// transformer's columns are appended, hiding input columns of the same name), and the parts of the saved model they have
/// in common (the text column, the model's options, the tokenizer and the weights).
/// </summary>
/// <typeparam name="TModel">The TorchSharp model.</typeparam>
public abstract partial class PeerTransformerBase<TModel> : RowToRowTransformerBase, IDisposable where TModel : torch.nn.Module
{
    private protected PeerTransformerBase(IHostEnvironment env, string name, TModel model, CompactTokenizer tokenizer,
        string textColumnName)
        : base(env.Register(name))
    {
        Model = model;
        Model.eval();
        Tokenizer = tokenizer;
        TextColumnName = textColumnName;
    }

    /// <summary>The underlying TorchSharp model (evaluation mode). Owned by this transformer.</summary>
    public TModel Model { get; }

    /// <summary>The tokenizer the model was trained with (built from the training texts).</summary>
    public CompactTokenizer Tokenizer { get; }

    /// <summary>The input text column.</summary>
    public string TextColumnName { get; }

    // RowToRowTransformerBase implements these two explicitly; kept callable on the transformer as they were.
    public bool IsRowToRowMapper => true;

    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => ((ITransformer)this).GetRowToRowMapper(inputSchema);

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

    /// <summary>The mapper that appends this transformer's columns to rows whose text is input column
    /// <paramref name="textIndex"/>.</summary>
    private protected abstract IRowMapper CreateMapper(DataViewSchema inputSchema, int textIndex);

    /// <summary>
    /// The row mapping of a PEER transformer: all its columns come from one score of the row's text, computed once per row
    /// however many of them are read. Getters are made per row source, so each cursor, prediction engine or thread has its
    /// own buffers.
    /// </summary>
    /// <typeparam name="TScore">What one forward pass gives for a text.</typeparam>
    private protected abstract class PeerMapper<TScore> : MapperBase
    {
        private readonly PeerTransformerBase<TModel> _parent;
        private readonly int _textIndex;
        private readonly Func<string, TScore> _score;

        protected PeerMapper(PeerTransformerBase<TModel> parent, DataViewSchema inputSchema, int textIndex, Func<string, TScore> score)
            : base(parent.Host, inputSchema, parent)
        {
            _parent = parent;
            _textIndex = textIndex;
            _score = score;
        }

        /// <summary>The getter of output column <paramref name="iinfo"/>, reading the current row's score.</summary>
        protected abstract Delegate MakeGetter(int iinfo, Func<TScore> rowScore);

        // MapperBase makes each column's getter on its own; the columns share one score per row, so they are made together.
        public override Delegate[] CreateGetters(DataViewRow input, Func<int, bool> activeOutput, out Action disposer)
        {
            disposer = null!;
            var getters = new Delegate[OutputColumns.Value.Length];
            Func<TScore>? rowScore = null;
            for (int i = 0; i < getters.Length; i++)
            {
                if (activeOutput(i)) getters[i] = MakeGetter(i, rowScore ??= ScorePerRow(input));
            }
            return getters;
        }

        protected override Delegate MakeGetter(DataViewRow input, int iinfo, Func<int, bool> activeOutput, out Action disposer) =>
            CreateGetters(input, i => i == iinfo, out disposer)[iinfo];

        protected override Func<int, bool> GetDependenciesCore(Func<int, bool> activeOutput)
        {
            bool anyActive = Enumerable.Range(0, OutputColumns.Value.Length).Any(activeOutput);
            return column => anyActive && column == _textIndex;
        }

        // As ML.NET's transformers do: a mapper saves as its transformer (a transformed data view saved with its pipeline).
        protected override void SaveModel(ModelSaveContext ctx) => _parent.SaveModel(ctx);

        private Func<TScore> ScorePerRow(DataViewRow input)
        {
            var textGetter = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[_textIndex]);
            long scoredPosition = -1;
            TScore value = default!;
            ReadOnlyMemory<char> text = default;
            return () =>
            {
                if (scoredPosition != input.Position)
                {
                    textGetter(ref text);
                    value = _score(text.ToString());
                    scoredPosition = input.Position;
                }
                return value;
            };
        }
    }

    /// <summary>The format's signature and versions.</summary>
    private protected abstract VersionInfo FormatVersion { get; }

    /// <summary>The model's options, saved as JSON.</summary>
    private protected abstract object SavedOptions { get; }

    /// <summary>The models saved, each with its options: <see cref="Model"/> alone, or an ensemble with <see cref="Model"/> first.</summary>
    private protected virtual IReadOnlyList<(object Options, torch.nn.Module Model)> SavedMembers => new[] { (SavedOptions, (torch.nn.Module)Model) };

    /// <summary>Writes what follows the text column in the transformer's own stream.</summary>
    private protected abstract void SaveHeader(ModelSaveContext ctx);

    /// <summary>The digest of the header fields (text column included), recorded with the streams' checksums.</summary>
    private protected abstract string HeaderDigest { get; }

    // ICanSaveModel.Save (RowToRowTransformerBase's) calls this.
    protected sealed override void SaveModel(ModelSaveContext ctx)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        // A disposed model has no weights left to write: saving it would replace a good file with an empty model.
        using var call = UseModel();
        var members = SavedMembers;
        foreach (var (_, model) in members) Training.FiniteWeights.Ensure(model, "at save");
        ctx.CheckAtModel();
        ctx.SetVersionInfo(FormatVersion);
        ctx.SaveNonEmptyString(TextColumnName);
        SaveHeader(ctx);
        PeerModelPersistence.SaveModel(ctx, members, Tokenizer, HeaderDigest);
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

    protected sealed override IRowMapper MakeRowMapper(DataViewSchema schema)
    {
        ArgumentNullException.ThrowIfNull(schema);
        lock (_lifetime) ObjectDisposedException.ThrowIf(_disposed, this);
        return CreateMapper(schema, SchemaChecks.TextColumn(schema, TextColumnName).Index);
    }
}
