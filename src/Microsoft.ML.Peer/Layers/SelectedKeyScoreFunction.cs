using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// Differentiable scores of keys already selected by the native top-k. Forward passes through the scores the
/// kernel computed (no gathers); backward sends ∂score to the queries and to exactly the selected sub-key rows:
/// score(a·n+b) = q1·C1[a] + q2·C2[b], so ∂q1 = Σ_j ds_j C1[a_j] and ∂C1[a_j] += ds_j q1.
/// </summary>
internal sealed class SelectedKeyScoreFunction : autograd.SingleTensorFunction<SelectedKeyScoreFunction>
{
    public override string Name => nameof(SelectedKeyScoreFunction);

    /// <summary>queries [T, h, d_key], subKeys [2, n, d_key/2], scores and indices [T, h, k] from the kernel.</summary>
    public static Tensor Apply(Tensor queries, Tensor subKeys, Tensor scores, Tensor indices) => apply(queries, subKeys, scores, indices);

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var queries = (Tensor)vars[0];
        var subKeys = (Tensor)vars[1];
        var indices = (Tensor)vars[3];
        ctx.save_for_backward(new List<Tensor> { queries, subKeys, indices });
        return ((Tensor)vars[2]).clone();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var saved = ctx.get_saved_variables();
        Tensor queries = saved[0], subKeys = saved[1], indices = saved[2];
        long n = subKeys.shape[1], half = subKeys.shape[2], k = indices.shape[^1];
        long rows = indices.numel() / k;
        var ds = gradOutput.reshape(rows, 1, k);
        var flat = indices.reshape(-1);
        var a = flat.div(n, rounding_mode: RoundingMode.floor);
        var b = flat.remainder(n);
        var q = queries.reshape(rows, 2, half);
        var keys1 = subKeys[0].index_select(0, a).view(rows, k, half);
        var keys2 = subKeys[1].index_select(0, b).view(rows, k, half);
        var dq = cat(new[] { bmm(ds, keys1), bmm(ds, keys2) }, 1).view(queries.shape);
        var dk = zeros_like(subKeys);
        var weighted = ds.transpose(1, 2);                                  // [R, k, 1]
        dk[0].index_add_(0, a, (weighted * q[.., 0..1, ..]).reshape(rows * k, half), 1);
        dk[1].index_add_(0, b, (weighted * q[.., 1..2, ..]).reshape(rows * k, half), 1);
        return new List<Tensor> { dq, dk, null!, null! };
    }
}
