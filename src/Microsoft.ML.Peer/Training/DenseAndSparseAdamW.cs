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
    private readonly double _expertLearningRateScale;

    /// <param name="namedParameters">Every trainable parameter of the model, with its name (the model's named_parameters()).</param>
    /// <param name="sparseTables">The names of those of <paramref name="namedParameters"/> whose gradients are sparse rows.</param>
    /// <param name="learningRate">Initial learning rate (each <see cref="Step"/> sets the scheduled one).</param>
    /// <param name="beta1">AdamW β1.</param>
    /// <param name="beta2">AdamW β2.</param>
    /// <param name="weightDecay">Decoupled weight decay of matrices, tables and sparse rows.</param>
    /// <param name="expertTables">The names of the expert/value tables (sparse or not), stepped at
    /// <paramref name="expertLearningRateScale"/> × the learning rate.</param>
    /// <param name="expertLearningRateScale">Learning-rate multiplier of <paramref name="expertTables"/>; 1 steps them like everything
    /// else.</param>
    /// <param name="seed">Seeds the stochastic rounding of bfloat16 sparse tables.</param>
    public DenseAndSparseAdamW(IEnumerable<(string Name, Parameter Parameter)> namedParameters, IEnumerable<string> sparseTables,
        double learningRate, double beta1, double beta2, double weightDecay, IEnumerable<string>? expertTables = null,
        double expertLearningRateScale = 1, ulong seed = 0)
    {
        _expertLearningRateScale = expertLearningRateScale;
        // Parameters are told apart by name: the Parameter wrappers of one tensor differ between accessors.
        var all = namedParameters.ToList();
        var byName = all.ToDictionary(p => p.Name, p => p.Parameter);
        Parameter Named(string name) => byName.TryGetValue(name, out var p) ? p
            : throw new ArgumentException($"The model has no parameter named '{name}'.", nameof(namedParameters));
        var sparse = sparseTables.Select(Named).ToList();
        var sparseNames = new HashSet<string>(sparseTables);
        var expertNames = new HashSet<string>(expertTables ?? Enumerable.Empty<string>());
        foreach (var name in expertNames) Named(name);
        var dense = all.Where(p => !sparseNames.Contains(p.Name)).ToList();
        _denseParameters = dense.Select(p => p.Parameter).ToList();
        if (sparse.Count > 0)
            _sparse = new SparseRowAdamW(sparse, beta1, beta2, 1e-8, weightDecay, seed: seed);
        var decay = dense.Where(p => p.Parameter.dim() >= 2 && !expertNames.Contains(p.Name)).Select(p => p.Parameter).ToList();
        var denseExperts = dense.Where(p => expertNames.Contains(p.Name)).Select(p => p.Parameter).ToList();
        var noDecay = _denseParameters.Where(p => p.dim() < 2).ToList();
        _dense = optim.AdamW(new[]
        {
            new AdamW.ParamGroup(decay, lr: learningRate, beta1: beta1, beta2: beta2, weight_decay: weightDecay),
            new AdamW.ParamGroup(noDecay, lr: learningRate, beta1: beta1, beta2: beta2, weight_decay: 0),
            new AdamW.ParamGroup(denseExperts, lr: learningRate * expertLearningRateScale, beta1: beta1, beta2: beta2,
                weight_decay: weightDecay),
        });
    }

    // Index of the dense expert tables' group in the constructor's list.
    private const int ExpertGroup = 2;

    /// <summary>Whether some tables are updated by the row-sparse optimizer.</summary>
    public bool HasSparseTables => _sparse is not null;

    public void ZeroGrad()
    {
        _dense.zero_grad();
        _sparse?.ZeroGrad();
    }

    /// <summary>Clips all gradients to a global norm of <paramref name="clipNorm"/> (0: no clipping) and takes one step at
    /// <paramref name="learningRate"/>.</summary>
    public void Step(double learningRate, double clipNorm)
    {
        var groups = _dense.ParamGroups.ToList();
        for (int i = 0; i < groups.Count; i++)
            groups[i].LearningRate = i == ExpertGroup ? learningRate * _expertLearningRateScale : learningRate;
        double scale = clipNorm > 0 ? ClipScale(clipNorm) : 1.0;
        if (scale < 1)
            using (no_grad())
                foreach (var p in _denseParameters) p.grad?.mul_(scale);
        _dense.step();
        _sparse?.Step(learningRate * _expertLearningRateScale, scale);
    }

    // Global gradient-norm clipping over dense and sparse-row gradients alike: the factor to scale them by. Every
    // parameter's ‖g‖² is computed first and all are read at once, one synchronisation per step instead of one per parameter.
    private double ClipScale(double clipNorm)
    {
        using var scope = NewDisposeScope();
        var squares = _sparse?.SquaredGradientNorms() ?? new List<Tensor>();
        foreach (var p in _denseParameters)
            if (p.grad is { } g) squares.Add(g.square().sum());
        if (squares.Count == 0) return 1.0;
        // Summed in double, as the parameters' float32 sums were before.
        double squared = stack(squares).to(ScalarType.Float64).sum().item<double>();
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
            throw new InvalidDataException(
                $"Checkpoint '{source}' {(hasSparse ? "has" : "lacks")} sparse optimizer state, which its own options contradict.");
        _sparse?.Load(reader);
    }

    public void Dispose()
    {
        _dense.Dispose();
        _sparse?.Dispose();
    }
}
