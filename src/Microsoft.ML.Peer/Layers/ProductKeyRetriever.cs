using Microsoft.ML.Peer.Native;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// Exact top-k over N = n² product keys in O(n) work per query (Lample et al. 2019).
/// Key i = a·n + b is the concatenation [c_a ; c'_b] of two sub-keys, so its score against a query
/// [q1 ; q2] is q1·c_a + q2·c'_b. The top-k of the sums must lie in (top-k of q1·C) × (top-k of q2·C'),
/// so scoring 2n sub-keys and then k² candidates gives the same set as scoring all N keys.
/// All heads share the one set of sub-keys (and so the one pool of experts).
/// </summary>
public sealed class ProductKeyRetriever : Module<Tensor, (Tensor Scores, Tensor Indices)>
{
    private readonly int _subKeys;
    private readonly int _topK;
    private readonly int _halfDimension;
    private readonly PeerKernels _kernels;
    private readonly bool _normalizeSubKeys;

    /// <summary>The two sub-key tables, shape [2, n, d_key/2].</summary>
    public Parameter SubKeys { get; }

    /// <param name="subKeys">n: sub-keys per half (N = n² keys).</param>
    /// <param name="keyDimension">Query and key dimension (even).</param>
    /// <param name="topK">Keys retrieved per query, at most n.</param>
    /// <param name="kernels">Native: Peer.Native's exact top-k selects the keys; Managed: torch top-k over the sub-key scores.</param>
    /// <param name="normalizeSubKeys">Score against unit-length sub-keys (<see cref="ProductKeyOptions.NormalizeSubKeys"/>).</param>
    public ProductKeyRetriever(int subKeys, int keyDimension, int topK, PeerKernels kernels = PeerKernels.Auto,
        bool normalizeSubKeys = false)
        : base(TorchSharpRuntime.Prepared(nameof(ProductKeyRetriever)))
    {
        if (subKeys <= 0) throw new ArgumentOutOfRangeException(nameof(subKeys), subKeys, "The number of sub-keys must be positive.");
        if (keyDimension <= 0 || keyDimension % 2 != 0)
            throw new ArgumentOutOfRangeException(nameof(keyDimension), keyDimension, "The key dimension must be a positive even number.");
        if (topK <= 0 || topK > subKeys)
            throw new ArgumentOutOfRangeException(nameof(topK), topK, $"top-k must be between 1 and the number of sub-keys ({subKeys}).");
        _subKeys = subKeys;
        _topK = topK;
        _halfDimension = keyDimension / 2;
        _kernels = kernels;
        _normalizeSubKeys = normalizeSubKeys;
        // Unit-variance scores for a unit-variance query half.
        SubKeys = new Parameter(randn(2, subKeys, _halfDimension) / Math.Sqrt(_halfDimension));
        register_parameter("sub_keys", SubKeys);
    }

    /// <summary>
    /// Queries [tokens, heads, d_key] → scores [tokens, heads, k] (descending) and expert indices
    /// [tokens, heads, k] (int64, in [0, n²)). Scores are differentiable w.r.t. the queries and sub-keys.
    /// </summary>
    public override (Tensor Scores, Tensor Indices) forward(Tensor queries)
    {
        using var scope = NewDisposeScope();
        if (queries.dim() != 3 || queries.shape[2] != 2 * _halfDimension)
            throw new ArgumentException(
                $"Queries must have shape [tokens, heads, {2 * _halfDimension}]; got [{string.Join(", ", queries.shape)}].",
                nameof(queries));
        // Unit-length keys are a differentiable function of the stored ones, so both paths below train them through it.
        var keys = _normalizeSubKeys ? nn.functional.normalize(SubKeys, p: 2, dim: -1) : SubKeys;
        if (PeerNativeLibrary.ShouldUse(_kernels, queries, keys))
        {
            // The native kernel selects and scores the keys without any [tokens, n] tensor; the scores stay
            // differentiable w.r.t. queries and sub-keys through the selected rows only.
            var (nativeScores, selected) = NativeTopK(queries, keys);
            var scored = SelectedKeyScoreFunction.Apply(queries, keys, nativeScores, selected);
            return (scored.MoveToOuterDisposeScope(), selected.MoveToOuterDisposeScope());
        }
        var halves = queries.split(_halfDimension, dim: -1);
        var scores1 = matmul(halves[0], keys[0].t());
        var scores2 = matmul(halves[1], keys[1].t());
        var (top1, index1) = scores1.topk(_topK, dim: -1);
        var (top2, index2) = scores2.topk(_topK, dim: -1);
        // k×k cartesian candidates, then the best k of those.
        var candidates = (top1.unsqueeze(-1) + top2.unsqueeze(-2)).flatten(-2);
        var (best, flat) = candidates.topk(_topK, dim: -1);
        var a = index1.gather(-1, flat.div(_topK, rounding_mode: RoundingMode.floor));
        var b = index2.gather(-1, flat.remainder(_topK));
        var indices = a * _subKeys + b;
        return (best.MoveToOuterDisposeScope(), indices.MoveToOuterDisposeScope());
    }

    private unsafe (Tensor Scores, Tensor Indices) NativeTopK(Tensor queries, Tensor subKeys)
    {
        using var noGrad = no_grad();
        var flat = queries.detach().reshape(-1, 2 * _halfDimension).contiguous();
        var keys = subKeys.detach().contiguous();
        long rows = flat.shape[0];
        var scores = empty(rows, _topK);
        var indices = empty(rows, _topK, dtype: ScalarType.Int64);
        PeerNativeLibrary.Check(PeerNativeMethods.ProductKeyTopK(
            PeerNativeLibrary.Pointer<float>(flat, ScalarType.Float32, "queries"),
            PeerNativeLibrary.Pointer<float>(keys, ScalarType.Float32, "sub_keys"),
            rows, _subKeys, 2 * _halfDimension, _topK,
            PeerNativeLibrary.Pointer<float>(scores, ScalarType.Float32, "scores"),
            PeerNativeLibrary.Pointer<long>(indices, ScalarType.Int64, "indices")), "peer_product_key_topk_f32");
        return (scores.view(queries.shape[0], queries.shape[1], _topK), indices.view(queries.shape[0], queries.shape[1], _topK));
    }
}
