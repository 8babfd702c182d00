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
/// Tables stored in bfloat16 keep their moments in bfloat16 too: each touched row is updated in float32 and its weights and
/// moments stored back with stochastic rounding (up with the probability of the dropped fraction), so the expected stored
/// value is the float32 one and updates below bfloat16's resolution are kept on average instead of rounded away.
/// </summary>
internal sealed class SparseRowAdamW : IDisposable
{
    private readonly List<(Parameter Table, Tensor ExpAvg, Tensor ExpAvgSq, Tensor RowSteps)> _state = new();
    private readonly double _beta1, _beta2, _eps, _weightDecay;
    private readonly PeerKernels _kernels;
    private readonly ulong _seed;
    private Generator? _roundingNoise;

    /// <param name="tables">The N×d tables to update; their gradients must be sparse rows.</param>
    /// <param name="beta1">Decay of the first moment.</param>
    /// <param name="beta2">Decay of the second moment.</param>
    /// <param name="eps">Added to the denominator for stability.</param>
    /// <param name="weightDecay">Decoupled weight decay, applied to touched rows.</param>
    /// <param name="kernels">Auto (default): the native kernel for float32 or bfloat16 CPU tables when it is loaded.</param>
    /// <param name="seed">Seeds the stochastic rounding of bfloat16 tables (unused for float32 ones).</param>
    public SparseRowAdamW(IEnumerable<Parameter> tables, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weightDecay = 0, PeerKernels kernels = PeerKernels.Auto, ulong seed = 0)
    {
        ArgumentNullException.ThrowIfNull(tables);
        _beta1 = beta1; _beta2 = beta2; _eps = eps; _weightDecay = weightDecay;
        _kernels = kernels;
        _seed = seed;
        PeerNativeLibrary.RequireAvailable(kernels, "SparseRowAdamW was asked for the native kernel");
        foreach (var table in tables)
        {
            if (table.dim() != 2)
                throw new ArgumentException($"SparseRowAdamW updates 2-D tables; got a tensor of shape [{string.Join(", ", table.shape)}].",
                    nameof(tables));
            if (table.dtype is not (ScalarType.Float32 or ScalarType.BFloat16))
                throw new ArgumentException($"SparseRowAdamW updates float32 or bfloat16 tables; got {table.dtype}.", nameof(tables));
            _state.Add((table, Moments(table), Moments(table), zeros(table.shape[0], dtype: ScalarType.Int64).DetachFromDisposeScope()));
        }
    }

    // A zero moment table like `table`. The native kernel reads the moments' rows at random addresses, like the
    // table's, so they get the same huge-page advice, given before the zeros are written so the pages are faulted in
    // as huge pages rather than collapsed afterwards.
    private Tensor Moments(Tensor table)
    {
        var moments = empty_like(table).DetachFromDisposeScope();
        if (CanUseNative(table)) PeerNativeLibrary.AdviseHugePages(moments);
        return moments.zero_();
    }

    private bool CanUseNative(Tensor table) => PeerNativeLibrary.CanUse(_kernels, Array.Empty<Tensor>(), new[] { table });

    /// <summary>The first and second moments of table <paramref name="table"/> (in the table's type).</summary>
    internal (Tensor ExpAvg, Tensor ExpAvgSq) Moments(int table) => (_state[table].ExpAvg, _state[table].ExpAvgSq);

    /// <summary>The tables this optimizer owns.</summary>
    public IEnumerable<Parameter> Tables => _state.Select(s => s.Table);

    /// <summary>Sorted unique rows of a (possibly uncoalesced) sparse row gradient and their summed values, in float32 (the
    /// composed path gives a bfloat16 table bfloat16 gradients).</summary>
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
            return (indices, grad.SparseValues.to(ScalarType.Float32), false);
        var (rows, inverse, _) = unique(indices, sorted: true, return_inverse: true);
        var values = zeros(rows.shape[0], grad.shape[1]).index_add_(0, inverse!, grad.SparseValues.to(ScalarType.Float32), 1);
        return (rows, values, true);
    }

    // Merges a table's gradient rows once and stores the result back, so the norm and the step that follow
    // (or a second call) take the already-sorted fast path instead of merging again.
    private static (Tensor Rows, Tensor Values) CoalesceInPlace(Parameter table)
    {
        var grad = table.grad!;
        var (rows, values, merged) = Coalesce(grad);
        if (merged) table.grad = sparse_coo_tensor(rows.unsqueeze(0), values.to(grad.dtype), grad.shape);
        return (rows, values);
    }

    /// <summary>‖g‖² of each table's gradient, as float32 scalars not yet read (for global gradient clipping: the caller
    /// reads them with the dense parameters' in one synchronisation). They belong to the caller's dispose scope.</summary>
    internal List<Tensor> SquaredGradientNorms()
    {
        var norms = new List<Tensor>();
        foreach (var (table, _, _, _) in _state)
        {
            if (table.grad is null) continue;
            var (_, values) = CoalesceInPlace(table);
            norms.Add(values.square().sum());
        }
        return norms;
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
        for (int i = 0; i < _state.Count; i++)
        {
            var (table, expAvg, expAvgSq, rowSteps) = _state[i];
            if (table.grad is null) continue;
            using var scope = NewDisposeScope();
            var (rows, values) = CoalesceInPlace(table);
            if (CanUseNative(table))
                NativeStep(table, expAvg, expAvgSq, rowSteps, rows.contiguous(), values.contiguous(), lr, gradScale, TableSeed(i));
            else
                ManagedStep(table, expAvg, expAvgSq, rowSteps, rows, values, lr, gradScale);
        }
    }

    // Each table its own rounding noise: u and v rows of one expert are updated at the same steps.
    private ulong TableSeed(int table) => _seed ^ (0x9E3779B97F4A7C15UL * (ulong)(table + 1));

    private unsafe void NativeStep(Tensor table, Tensor expAvg, Tensor expAvgSq, Tensor rowSteps, Tensor rows, Tensor values, double lr,
        double gradScale, ulong seed)
    {
        if (table.dtype == ScalarType.BFloat16)
        {
            PeerNativeLibrary.Check(PeerNativeMethods.SparseAdamWBf16(
                PeerNativeLibrary.Pointer<ushort>(table, ScalarType.BFloat16, "table"),
                PeerNativeLibrary.Pointer<ushort>(expAvg, ScalarType.BFloat16, "exp_avg"),
                PeerNativeLibrary.Pointer<ushort>(expAvgSq, ScalarType.BFloat16, "exp_avg_sq"),
                PeerNativeLibrary.Pointer<long>(rowSteps, ScalarType.Int64, "row_steps"),
                table.shape[0], table.shape[1], PeerNativeLibrary.Pointer<long>(rows, ScalarType.Int64, "rows"),
                PeerNativeLibrary.Pointer<float>(values, ScalarType.Float32, "row_grads"), rows.shape[0],
                (float)lr, (float)_beta1, (float)_beta2, (float)_eps, (float)_weightDecay, (float)gradScale, seed),
                "peer_sparse_adamw_bf16");
            return;
        }
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
        // In float32 whatever the storage, as the native kernels compute.
        var g = values * gradScale;
        var steps = rowSteps.index_select(0, rows) + 1;
        var p = table.index_select(0, rows).to(ScalarType.Float32) * (1 - lr * _weightDecay);
        var m = expAvg.index_select(0, rows).to(ScalarType.Float32) * _beta1 + g * (1 - _beta1);
        var v = expAvgSq.index_select(0, rows).to(ScalarType.Float32) * _beta2 + g.square() * (1 - _beta2);
        var s = steps.to(ScalarType.Float64).unsqueeze(1);
        var correction1 = (1 - pow(_beta1, s)).to(ScalarType.Float32);
        var correction2 = (1 - pow(_beta2, s)).to(ScalarType.Float32);
        p = p - lr * (m / correction1) / ((v / correction2).sqrt() + _eps);
        StoreRows(table, rows, p);
        StoreRows(expAvg, rows, m);
        StoreRows(expAvgSq, rows, v);
        rowSteps.index_copy_(0, rows, steps);
    }

    // Writes float32 rows into a float32 table as they are, into a bfloat16 one with stochastic rounding. The noise comes
    // from this optimizer's own generator (seeded once), not torch's global one, so bfloat16 training leaves the model's
    // other random streams as they are; it is not the native kernel's hash, so the two paths agree to one bfloat16 step.
    private void StoreRows(Tensor target, Tensor rows, Tensor values)
    {
        if (target.dtype == ScalarType.Float32)
        {
            target.index_copy_(0, rows, values);
            return;
        }
        _roundingNoise ??= new Generator(_seed);
        target.index_copy_(0, rows, StochasticRoundToBFloat16(values, _roundingNoise));
    }

    /// <summary>
    /// float32 → bfloat16, rounding each magnitude up to the next bfloat16 value with probability equal to the fraction
    /// that truncation to bfloat16's 8 significant bits drops, so that the expected result is the input.
    /// </summary>
    internal static Tensor StochasticRoundToBFloat16(Tensor values, Generator generator)
    {
        // values = mantissa · 2^exponent with |mantissa| in [0.5, 1); scaled by 2^8 the bfloat16 neighbours are whole numbers
        // and every step here is exact in float32.
        var (mantissa, exponent) = frexp(values);
        var scaled = mantissa.abs() * 256;
        var below = scaled.floor();
        var up = rand(values.shape, generator: generator).lt(scaled - below).to(ScalarType.Float32);
        var rounded = ldexp((below + up) * mantissa.sign() / 256, exponent);
        // frexp leaves NaN and ±Inf in the mantissa; keep them.
        return where(values.isfinite(), rounded, values).to(ScalarType.BFloat16);
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
        _roundingNoise?.Dispose();
        _roundingNoise = null;
        foreach (var (_, expAvg, expAvgSq, rowSteps) in _state)
        {
            expAvg.Dispose();
            expAvgSq.Dispose();
            rowSteps.Dispose();
        }
        _state.Clear();
    }
}
