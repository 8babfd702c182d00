using Microsoft.ML.Peer.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// Differentiable scores of keys already selected by the native top-k. Forward passes through the scores the
/// kernel computed (no gathers); backward (native, O(k·d_key) per query) sends ∂score to the queries and to exactly
/// the selected sub-key rows: score(a·n+b) = q1·C1[a] + q2·C2[b], so ∂q1 = Σ_j ds_j C1[a_j] and ∂C1[a_j] += ds_j q1.
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

    public override unsafe List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var saved = ctx.get_saved_variables();
        var queries = saved[0].contiguous();
        var subKeys = saved[1].contiguous();
        var indices = saved[2].contiguous();
        var ds = gradOutput.contiguous();
        long n = subKeys.shape[1], keyDimension = queries.shape[^1], k = indices.shape[^1];
        var dq = empty_like(queries);
        var dk = empty_like(subKeys);
        PeerNativeLibrary.Check(PeerNativeMethods.SelectedKeyBackward(
            PeerNativeLibrary.Pointer<float>(queries, ScalarType.Float32, "queries"),
            PeerNativeLibrary.Pointer<float>(subKeys, ScalarType.Float32, "sub_keys"),
            PeerNativeLibrary.Pointer<long>(indices, ScalarType.Int64, "indices"),
            PeerNativeLibrary.Pointer<float>(ds, ScalarType.Float32, "dscores"),
            indices.numel() / k, n, keyDimension, k,
            PeerNativeLibrary.Pointer<float>(dq, ScalarType.Float32, "dqueries"),
            PeerNativeLibrary.Pointer<float>(dk, ScalarType.Float32, "dsub_keys")), "peer_selected_key_backward_f32");
        return new List<Tensor> { dq, dk, null!, null! };
    }
}
