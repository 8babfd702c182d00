using Microsoft.ML.Peer.Native;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// Parameter Efficient Expert Retrieval (He 2024, arXiv 2407.04153): a drop-in replacement for a
/// transformer's feed-forward block. Each of h heads retrieves its top-k of N single-neuron experts
/// e_i(x) = σ(u_i·x)·v_i by product keys; y = Σ_heads Σ_j g_j e_{i_j}(x). All heads share one expert pool.
/// Nothing of size N is built per token: retrieval costs O(sqrt(N)), experts cost O(h·k·d).
/// </summary>
public sealed class PeerLayer : Module<Tensor, Tensor>
{
    private readonly PeerOptions _options;
    private readonly int _dimension;
    private readonly ProductKeyRouter router;
    private readonly Embedding expert_down;   // u_i, [N, d]
    private readonly Embedding expert_up;     // v_i, [N, d]
    private readonly ExpertGradientWorkspace _workspace = new();

    public PeerLayer(int dimension, PeerOptions options) : base(TorchSharpRuntime.Prepared(nameof(PeerLayer)))
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (dimension <= 0) throw new ArgumentOutOfRangeException(nameof(dimension), dimension, "The model dimension must be positive.");
        _options = options.Clone();
        _dimension = dimension;
        router = new ProductKeyRouter(dimension, _options);
        var tableType = _options.ExpertTableType;
        expert_down = nn.Embedding(options.Experts, dimension, sparse: options.SparseGradients, dtype: tableType);
        expert_up = nn.Embedding(options.Experts, dimension, sparse: options.SparseGradients, dtype: tableType);
        using (no_grad())
        {
            // u·x has unit variance for a unit-variance x; each head's output starts small next to the residual.
            InitializeTable(expert_down.weight!, dimension);
            InitializeTable(expert_up.weight!, dimension);
        }
        // The native kernels read the tables' rows at random addresses; huge pages cut the TLB misses of those reads
        // (docs/performance.md). Not asked for the managed kernels, which must not load the library.
        if (PeerNativeLibrary.CanUse(_options.Kernels))
        {
            PeerNativeLibrary.AdviseHugePages(expert_down.weight!);
            PeerNativeLibrary.AdviseHugePages(expert_up.weight!);
        }
        RegisterComponents();
    }

    // Drawn in float32 whatever the storage, so that a bfloat16 layer starts from the float32 layer's weights (rounded to
    // nearest) on the same seed.
    private static void InitializeTable(Tensor table, int dimension)
    {
        if (table.dtype == ScalarType.Float32)
        {
            table.normal_(0, 1.0 / Math.Sqrt(dimension));
            return;
        }
        using var drawn = empty(table.shape, dtype: ScalarType.Float32).normal_(0, 1.0 / Math.Sqrt(dimension));
        table.copy_(drawn);
    }

    public PeerOptions Options => _options.Clone();

    /// <summary>Query network, product keys and usage telemetry.</summary>
    public ProductKeyRouter Router => router;

    /// <summary>The N×d table of expert input weights u_i.</summary>
    public Parameter DownWeights => expert_down.weight!;

    /// <summary>The N×d table of expert output weights v_i.</summary>
    public Parameter UpWeights => expert_up.weight!;

    /// <summary>The names of <see cref="DownWeights"/> and <see cref="UpWeights"/> within this layer, as named_parameters() gives
    /// them.</summary>
    internal static IReadOnlyList<string> ExpertTableNames { get; } =
        new[] { $"{nameof(expert_down)}.weight", $"{nameof(expert_up)}.weight" };

    /// <summary>Whether a forward pass on <paramref name="x"/> runs the native fused kernels.</summary>
    public bool UsesNativeKernels(Tensor x) =>
        PeerNativeLibrary.ShouldUse(_options.Kernels, new[] { x }, new Tensor[] { expert_down.weight!, expert_up.weight! });

    // The composed reference: gathers [T, h·k, d] copies of the expert rows.
    private Tensor ComposedExperts(Tensor x, Tensor gates, Tensor indices)
    {
        // bfloat16 rows are widened (exactly) and the experts computed in float32, as the native kernels do.
        var u = expert_down.forward(indices).to(x.dtype);                 // [T, h·k, d]
        var hidden = bmm(u, x.unsqueeze(-1)).squeeze(-1);                 // u_i·x, [T, h·k]
        hidden = _options.ExpertActivation switch
        {
            ExpertActivation.Gelu => F.gelu(hidden),
            ExpertActivation.Relu => F.relu(hidden),
            _ => throw new InvalidOperationException($"Unknown expert activation {_options.ExpertActivation}."),
        };
        var weights = hidden * gates;                                     // g·σ(u·x)
        var v = expert_up.forward(indices).to(x.dtype);                   // [T, h·k, d]
        return bmm(weights.unsqueeze(1), v).squeeze(1);                   // Σ over heads and top-k
    }

    /// <summary>x [..., d] → y [..., d].</summary>
    public override Tensor forward(Tensor input)
    {
        if (input.shape[^1] != _dimension)
            throw new ArgumentException($"PEER layer expects a last dimension of {_dimension}; got [{string.Join(", ", input.shape)}].",
                nameof(input));
        using var scope = NewDisposeScope();
        var x = input.reshape(-1, _dimension);
        long tokens = x.shape[0];
        int active = _options.Heads * _options.TopK;
        var (gates, indices) = router.forward(x);
        var flat = indices.view(tokens, active);
        var y = UsesNativeKernels(x)
            ? FusedExpertFunction.Apply(x, gates.view(tokens, active), flat, expert_down.weight!, expert_up.weight!,
                _options.ExpertActivation, _options.SparseGradients, _workspace)
            : ComposedExperts(x, gates.view(tokens, active), flat);
        return y.view(input.shape).MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _workspace.Dispose();
        base.Dispose(disposing);
    }
}
