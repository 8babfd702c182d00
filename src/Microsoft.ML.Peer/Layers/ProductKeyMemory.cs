using Microsoft.ML.Peer.Native;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// Product Key Memory (Lample et al. 2019): the same product-key routing as PEER over a table of N
/// value vectors, y = Σ_heads Σ_j g_j v_{i_j}, with no per-expert nonlinearity.
/// </summary>
public sealed class ProductKeyMemory : Module<Tensor, Tensor>
{
    private readonly int _dimension;
    private readonly int _active;
    private readonly bool _sparseGradients;
    private readonly ProductKeyRouter router;
    private readonly Embedding values;

    public ProductKeyMemory(int dimension, ProductKeyOptions options) : base(TorchSharpRuntime.Prepared(nameof(ProductKeyMemory)))
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (dimension <= 0) throw new ArgumentOutOfRangeException(nameof(dimension), dimension, "The model dimension must be positive.");
        _dimension = dimension;
        _active = options.Heads * options.TopK;
        _sparseGradients = options.SparseGradients;
        router = new ProductKeyRouter(dimension, options);
        values = nn.Embedding(options.Experts, dimension, sparse: options.SparseGradients);
        using (no_grad()) values.weight!.normal_(0, 1.0 / Math.Sqrt(dimension));
        RegisterComponents();
    }

    public ProductKeyRouter Router => router;

    /// <summary>Whether the value table gets sparse (row) gradients.</summary>
    public bool SparseGradients => _sparseGradients;

    /// <summary>The N×d value table.</summary>
    public Parameter Values => values.weight!;

    /// <summary>The name of <see cref="Values"/> within this layer, as named_parameters() gives it.</summary>
    internal static string ValueTableName { get; } = $"{nameof(values)}.weight";

    public override Tensor forward(Tensor input)
    {
        if (input.shape[^1] != _dimension)
            throw new ArgumentException($"PKM layer expects a last dimension of {_dimension}; got [{string.Join(", ", input.shape)}].",
                nameof(input));
        using var scope = NewDisposeScope();
        var x = input.reshape(-1, _dimension);
        var (gates, indices) = router.forward(x);
        var v = values.forward(indices.view(x.shape[0], _active));          // [T, h·k, d]
        var y = bmm(gates.view(x.shape[0], 1, _active), v).squeeze(1);
        return y.view(input.shape).MoveToOuterDisposeScope();
    }
}
