using Microsoft.ML.Data;

namespace Microsoft.ML.Peer;

/// <summary>
/// The row-to-row mapping behind the PEER transformers: the input columns pass through unchanged and the
/// mapper's columns are appended (hiding input columns of the same name, as ML.NET's own transformers do).
/// Getters of the appended columns are made per row source, so each cursor, prediction engine or thread has
/// its own buffers.
/// </summary>
internal abstract class ColumnAppendingMapper : IRowToRowMapper
{
    private readonly int[] _inputDependencies;

    protected ColumnAppendingMapper(DataViewSchema inputSchema, IReadOnlyList<DataViewSchema.DetachedColumn> appended, IReadOnlyList<int> inputDependencies)
    {
        InputSchema = inputSchema;
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema);
        foreach (var column in appended) builder.AddColumn(column.Name, column.Type, column.Annotations);
        OutputSchema = builder.ToSchema();
        AppendedCount = appended.Count;
        _inputDependencies = inputDependencies.ToArray();
    }

    public DataViewSchema InputSchema { get; }

    public DataViewSchema OutputSchema { get; }

    protected int AppendedCount { get; }

    /// <summary>
    /// The score of the current row's text, computed once per row however many appended columns read it (the PEER
    /// transformers derive all their columns from one forward pass).
    /// </summary>
    protected static Func<T> ScorePerRow<T>(DataViewRow input, int textIndex, Func<string, T> score)
    {
        var textGetter = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[textIndex]);
        long scoredPosition = -1;
        T value = default!;
        ReadOnlyMemory<char> text = default;
        return () =>
        {
            if (scoredPosition != input.Position)
            {
                textGetter(ref text);
                value = score(text.ToString());
                scoredPosition = input.Position;
            }
            return value;
        };
    }

    /// <summary>Getters for the appended columns (index 0 = first appended); null where <paramref name="isActive"/> is false.</summary>
    protected abstract Delegate?[] MakeGetters(DataViewRow input, Func<int, bool> isActive);

    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
    {
        var needed = new HashSet<int>();
        foreach (var column in dependingColumns)
        {
            if (column.Index < InputSchema.Count) needed.Add(column.Index);
            else foreach (int i in _inputDependencies) needed.Add(i);
        }
        return needed.OrderBy(i => i).Select(i => InputSchema[i]).ToArray();
    }

    public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
    {
        ArgumentNullException.ThrowIfNull(input);
        return new AppendedRowCursor(this, input, null, activeColumns);
    }

    /// <summary>Wraps a cursor of the input data.</summary>
    internal DataViewRowCursor GetCursor(IDataView source, IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand)
    {
        var active = columnsNeeded.ToArray();
        var cursor = source.GetRowCursor(GetDependencies(active), rand);
        return new AppendedRowCursor(this, cursor, cursor, active);
    }

    private sealed class AppendedRowCursor : DataViewRowCursor
    {
        private readonly ColumnAppendingMapper _mapper;
        private readonly DataViewRow _input;
        private readonly DataViewRowCursor? _cursor;
        private readonly bool[] _active;
        private readonly Delegate?[] _getters;

        public AppendedRowCursor(ColumnAppendingMapper mapper, DataViewRow input, DataViewRowCursor? cursor, IEnumerable<DataViewSchema.Column> activeColumns)
        {
            _mapper = mapper;
            _input = input;
            _cursor = cursor;
            _active = new bool[mapper.OutputSchema.Count];
            foreach (var column in activeColumns) _active[column.Index] = true;
            int inputCount = mapper.InputSchema.Count;
            _getters = mapper.MakeGetters(input, i => _active[inputCount + i]);
        }

        public override DataViewSchema Schema => _mapper.OutputSchema;

        public override long Position => _input.Position;

        public override long Batch => _input.Batch;

        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();

        public override bool IsColumnActive(DataViewSchema.Column column)
        {
            CheckColumn(column);
            return column.Index < _mapper.InputSchema.Count ? _input.IsColumnActive(_input.Schema[column.Index]) : _active[column.Index];
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            CheckColumn(column);
            int inputCount = _mapper.InputSchema.Count;
            if (column.Index < inputCount) return _input.GetGetter<TValue>(_input.Schema[column.Index]);
            var getter = _getters[column.Index - inputCount]
                ?? throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor; request it when creating the cursor.");
            return getter as ValueGetter<TValue>
                ?? throw new InvalidOperationException($"Column '{column.Name}' holds {column.Type}; it cannot be read as {typeof(TValue).Name}.");
        }

        public override bool MoveNext() =>
            _cursor?.MoveNext() ?? throw new InvalidOperationException("A mapped row moves with the row it was made from.");

        protected override void Dispose(bool disposing)
        {
            if (disposing) _cursor?.Dispose();
            base.Dispose(disposing);
        }

        private void CheckColumn(DataViewSchema.Column column)
        {
            if (column.Index < 0 || column.Index >= Schema.Count || Schema[column.Index].Name != column.Name)
                throw new ArgumentOutOfRangeException(nameof(column), $"Column '{column.Name}' (index {column.Index}) is not in this row's schema.");
        }
    }
}

/// <summary>The output of a PEER transformer's Transform: lazy, like every ML.NET data view.</summary>
internal sealed class ColumnAppendingDataView : IDataView
{
    private readonly IDataView _source;
    private readonly ColumnAppendingMapper _mapper;

    public ColumnAppendingDataView(IDataView source, ColumnAppendingMapper mapper)
    {
        _source = source;
        _mapper = mapper;
    }

    public bool CanShuffle => _source.CanShuffle;

    public DataViewSchema Schema => _mapper.OutputSchema;

    public long? GetRowCount() => _source.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) =>
        _mapper.GetCursor(_source, columnsNeeded, rand);

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        new[] { GetRowCursor(columnsNeeded, rand) };
}
