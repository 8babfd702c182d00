using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Native;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Training;

/// <summary>
/// AdamW for N×d expert tables with sparse (row) gradients: only the rows retrieved in a step are read and
/// written, so the cost follows active parameters, not N. Each row keeps its own step count for the bias
/// correction. Approximation, documented: dense AdamW would also move untouched rows by their decaying
/// momentum and decay their weights every step; here a row changes only in steps that touch it
/// (as TensorFlow's LazyAdam and PyTorch's SparseAdam do). Runs the native kernel when it is loaded.
/// </summary>
internal sealed class SparseRowAdamW : IDisposable
{
    private readonly List<(Parameter Table, Tensor ExpAvg, Tensor ExpAvgSq, Tensor RowSteps)> _state = new();
    private readonly double _beta1, _beta2, _eps, _weightDecay;
    private readonly PeerKernels _kernels;

    /// <param name="tables">The N×d tables to update; their gradients must be sparse rows.</param>
    /// <param name="beta1">Decay of the first moment.</param>
    /// <param name="beta2">Decay of the second moment.</param>
    /// <param name="eps">Added to the denominator for stability.</param>
    /// <param name="weightDecay">Decoupled weight decay, applied to touched rows.</param>
    /// <param name="kernels">Auto (default): the native kernel for float32 CPU tables when it is loaded.</param>
    public SparseRowAdamW(IEnumerable<Parameter> tables, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weightDecay = 0, PeerKernels kernels = PeerKernels.Auto)
    {
        ArgumentNullException.ThrowIfNull(tables);
        _beta1 = beta1; _beta2 = beta2; _eps = eps; _weightDecay = weightDecay;
        _kernels = kernels;
        PeerNativeLibrary.RequireAvailable(kernels, "SparseRowAdamW was asked for the native kernel");
        foreach (var table in tables)
        {
            if (table.dim() != 2)
                throw new ArgumentException($"SparseRowAdamW updates 2-D tables; got a tensor of shape [{string.Join(", ", table.shape)}].",
                    nameof(tables));
            _state.Add((table, Moments(table), Moments(table), zeros(table.shape[0], dtype: ScalarType.Int64).DetachFromDisposeScope()));
        }
    }

    // A zero moment table like `table`. The native kernel reads the moments' rows at random addresses, like the
    // table's, so they get the same huge-page advice, given before the zeros are written so the pages are faulted in
    // as huge pages rather than collapsed afterwards.
    private Tensor Moments(Tensor table)
    {
        var moments = empty_like(table).DetachFromDisposeScope();
        if (PeerNativeLibrary.CanUse(_kernels, table)) PeerNativeLibrary.AdviseHugePages(moments);
        return moments.zero_();
    }

    /// <summary>The tables this optimizer owns.</summary>
    public IEnumerable<Parameter> Tables => _state.Select(s => s.Table);

    /// <summary>Sorted unique rows of a (possibly uncoalesced) sparse row gradient and their summed values.</summary>
    public static (Tensor Rows, Tensor Values) CoalesceRows(Tensor grad)
    {
        var (rows, values, _) = Coalesce(grad);
        return (rows, values);
    }

    private static (Tensor Rows, Tensor Values, bool Merged) Coalesce(Tensor grad)
    {
        ArgumentNullException.ThrowIfNull(grad);
        if (!grad.is_sparse)
            throw new ArgumentException("Expected a sparse row gradient (embedding tables need SparseGradients on).", nameof(grad));
        var indices = grad.SparseIndices[0];
        // The native backward already emits sorted unique rows; only merge when that is not so.
        if (indices.shape[0] < 2 || indices[1..].gt(indices[..^1]).all().item<bool>())
            return (indices, grad.SparseValues, false);
        var (rows, inverse, _) = unique(indices, sorted: true, return_inverse: true);
        var values = zeros(rows.shape[0], grad.shape[1], dtype: grad.dtype).index_add_(0, inverse!, grad.SparseValues, 1);
        return (rows, values, true);
    }

    // Merges a table's gradient rows once and stores the result back, so the norm and the step that follow
    // (or a second call) take the already-sorted fast path instead of merging again.
    private static (Tensor Rows, Tensor Values) CoalesceInPlace(Parameter table)
    {
        var grad = table.grad!;
        var (rows, values, merged) = Coalesce(grad);
        if (merged) table.grad = sparse_coo_tensor(rows.unsqueeze(0), values, grad.shape);
        return (rows, values);
    }

    /// <summary>Σ‖g‖² over the tables' gradients (for global gradient clipping).</summary>
    public double SquaredGradientNorm()
    {
        double total = 0;
        foreach (var (table, _, _, _) in _state)
        {
            if (table.grad is null) continue;
            using var scope = NewDisposeScope();
            var (_, values) = CoalesceInPlace(table);
            total += values.square().sum().item<float>();
        }
        return total;
    }

    public void ZeroGrad()
    {
        foreach (var (table, _, _, _) in _state) table.grad = null;
    }

    /// <summary>One update of every touched row with learning rate <paramref name="lr"/>, gradients scaled by
    /// <paramref name="gradScale"/>.</summary>
    public void Step(double lr, double gradScale = 1.0)
    {
        using var noGrad = no_grad();
        foreach (var (table, expAvg, expAvgSq, rowSteps) in _state)
        {
            if (table.grad is null) continue;
            using var scope = NewDisposeScope();
            var (rows, values) = CoalesceInPlace(table);
            if (PeerNativeLibrary.CanUse(_kernels, table))
                NativeStep(table, expAvg, expAvgSq, rowSteps, rows.contiguous(), values.contiguous(), lr, gradScale);
            else
                ManagedStep(table, expAvg, expAvgSq, rowSteps, rows, values, lr, gradScale);
        }
    }

    private unsafe void NativeStep(Tensor table, Tensor expAvg, Tensor expAvgSq, Tensor rowSteps, Tensor rows, Tensor values, double lr,
        double gradScale)
    {
        PeerNativeLibrary.Check(PeerNativeMethods.SparseAdamW(
            PeerNativeLibrary.Pointer<float>(table, ScalarType.Float32, "table"),
            PeerNativeLibrary.Pointer<float>(expAvg, ScalarType.Float32, "exp_avg"),
            PeerNativeLibrary.Pointer<float>(expAvgSq, ScalarType.Float32, "exp_avg_sq"),
            PeerNativeLibrary.Pointer<long>(rowSteps, ScalarType.Int64, "row_steps"),
            table.shape[0], table.shape[1], PeerNativeLibrary.Pointer<long>(rows, ScalarType.Int64, "rows"),
            PeerNativeLibrary.Pointer<float>(values, ScalarType.Float32, "row_grads"), rows.shape[0],
            (float)lr, (float)_beta1, (float)_beta2, (float)_eps, (float)_weightDecay, (float)gradScale), "peer_sparse_adamw_f32");
    }

    private void ManagedStep(Tensor table, Tensor expAvg, Tensor expAvgSq, Tensor rowSteps, Tensor rows, Tensor values, double lr,
        double gradScale)
    {
        var g = values * gradScale;
        var steps = rowSteps.index_select(0, rows) + 1;
        var p = table.index_select(0, rows) * (1 - lr * _weightDecay);
        var m = expAvg.index_select(0, rows) * _beta1 + g * (1 - _beta1);
        var v = expAvgSq.index_select(0, rows) * _beta2 + g.square() * (1 - _beta2);
        var s = steps.to(ScalarType.Float64).unsqueeze(1);
        var correction1 = (1 - pow(_beta1, s)).to(table.dtype);
        var correction2 = (1 - pow(_beta2, s)).to(table.dtype);
        p = p - lr * (m / correction1) / ((v / correction2).sqrt() + _eps);
        table.index_copy_(0, rows, p);
        expAvg.index_copy_(0, rows, m);
        expAvgSq.index_copy_(0, rows, v);
        rowSteps.index_copy_(0, rows, steps);
    }

    public void Save(BinaryWriter writer)
    {
        writer.Write(_state.Count);
        foreach (var (_, expAvg, expAvgSq, rowSteps) in _state)
        {
            expAvg.Save(writer);
            expAvgSq.Save(writer);
            rowSteps.Save(writer);
        }
    }

    public void Load(BinaryReader reader)
    {
        int count = reader.ReadInt32();
        if (count != _state.Count)
            throw new InvalidDataException($"The saved sparse optimizer state has {count} tables; this model has {_state.Count}.");
        using var noGrad = no_grad();
        foreach (var (_, expAvg, expAvgSq, rowSteps) in _state)
        {
            expAvg.Load(reader);
            expAvgSq.Load(reader);
            rowSteps.Load(reader);
        }
    }

    public void Dispose()
    {
        foreach (var (_, expAvg, expAvgSq, rowSteps) in _state)
        {
            expAvg.Dispose();
            expAvgSq.Dispose();
            rowSteps.Dispose();
        }
        _state.Clear();
    }
}
