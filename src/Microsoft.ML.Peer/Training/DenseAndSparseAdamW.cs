using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Training;

/// <summary>
/// The optimizer every trainer here uses: dense AdamW for ordinary parameters (decay on matrices and tables only,
/// norms and biases keep their scale) and <see cref="SparseRowAdamW"/> for the expert tables with sparse row
/// gradients, with one global gradient-norm clip over both. Shared by the language-model and classifier trainers
/// so both update, clip and checkpoint the same way.
/// </summary>
internal sealed class DenseAndSparseAdamW : IDisposable
{
    private readonly AdamW _dense;
    private readonly SparseRowAdamW? _sparse;
    private readonly List<Parameter> _denseParameters;

    /// <param name="parameters">Every trainable parameter of the model.</param>
    /// <param name="sparseTables">Those of <paramref name="parameters"/> whose gradients are sparse rows.</param>
    /// <param name="learningRate">Initial learning rate (each <see cref="Step"/> sets the scheduled one).</param>
    /// <param name="beta1">AdamW β1.</param>
    /// <param name="beta2">AdamW β2.</param>
    /// <param name="weightDecay">Decoupled weight decay of matrices, tables and sparse rows.</param>
    public DenseAndSparseAdamW(IEnumerable<Parameter> parameters, IEnumerable<Parameter> sparseTables, double learningRate, double beta1, double beta2, double weightDecay)
    {
        var sparse = sparseTables.ToList();
        // Wrappers differ between accessors, so match parameters by their storage.
        var sparseStorage = new HashSet<IntPtr>(sparse.Select(p => Native.PeerNativeMethods.TensorData(p.Handle)));
        _denseParameters = parameters.Where(p => !sparseStorage.Contains(Native.PeerNativeMethods.TensorData(p.Handle))).ToList();
        if (sparse.Count > 0)
            _sparse = new SparseRowAdamW(sparse, beta1, beta2, 1e-8, weightDecay);
        var decay = _denseParameters.Where(p => p.dim() >= 2).ToList();
        var noDecay = _denseParameters.Where(p => p.dim() < 2).ToList();
        _dense = optim.AdamW(new[]
        {
            new AdamW.ParamGroup(decay, lr: learningRate, beta1: beta1, beta2: beta2, weight_decay: weightDecay),
            new AdamW.ParamGroup(noDecay, lr: learningRate, beta1: beta1, beta2: beta2, weight_decay: 0),
        });
    }

    /// <summary>Whether some tables are updated by the row-sparse optimizer.</summary>
    public bool HasSparseTables => _sparse is not null;

    public void ZeroGrad()
    {
        _dense.zero_grad();
        _sparse?.ZeroGrad();
    }

    /// <summary>Clips all gradients to a global norm of <paramref name="clipNorm"/> (0: no clipping) and takes one step at <paramref name="learningRate"/>.</summary>
    public void Step(double learningRate, double clipNorm)
    {
        foreach (var group in _dense.ParamGroups) group.LearningRate = learningRate;
        double scale = clipNorm > 0 ? ClipScale(clipNorm) : 1.0;
        if (scale < 1)
            using (no_grad())
                foreach (var p in _denseParameters) p.grad?.mul_(scale);
        _dense.step();
        _sparse?.Step(learningRate, scale);
    }

    // Global gradient-norm clipping over dense and sparse-row gradients alike: the factor to scale them by.
    private double ClipScale(double clipNorm)
    {
        double squared = _sparse?.SquaredGradientNorm() ?? 0;
        using (var scope = NewDisposeScope())
            foreach (var p in _denseParameters)
                if (p.grad is { } g) squared += g.square().sum().item<float>();
        double norm = Math.Sqrt(squared);
        return norm > clipNorm ? clipNorm / (norm + 1e-6) : 1.0;
    }

    /// <summary>Writes the dense state, a flag, then the sparse state (the language-model checkpoint layout).</summary>
    public void Save(BinaryWriter writer)
    {
        _dense.save_state_dict(writer);
        writer.Write(_sparse is not null);
        _sparse?.Save(writer);
    }

    /// <summary>Reads what <see cref="Save"/> wrote; <paramref name="source"/> names the file in errors.</summary>
    public void Load(BinaryReader reader, string source)
    {
        _dense.load_state_dict(reader);
        bool hasSparse = reader.ReadBoolean();
        if (hasSparse != (_sparse is not null))
            throw new InvalidDataException($"Checkpoint '{source}' {(hasSparse ? "has" : "lacks")} sparse optimizer state, which its own options contradict.");
        _sparse?.Load(reader);
    }

    public void Dispose()
    {
        _dense.Dispose();
        _sparse?.Dispose();
    }
}
