using Microsoft.ML.Peer.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// Autograd function over the native fused expert kernels: y[t] = Σ_j g[t,j]·σ(u_{i}·x[t])·v_{i}.
/// Forward saves only the h·k pre-activations per token; backward returns dx, dg and the gradients of
/// exactly the touched expert rows (sparse, coalesced; or scattered into dense tables when asked).
/// </summary>
internal sealed class FusedExpertFunction : autograd.SingleTensorFunction<FusedExpertFunction>
{
    public override string Name => nameof(FusedExpertFunction);

    /// <summary>x [T, d], gates [T, m], indices [T, m] int64, tables [N, d] → y [T, d].</summary>
    /// <remarks>
    /// The tables' gradients are written to their <c>.grad</c> directly (accumulating when one exists) rather than
    /// returned to autograd, which would copy them once more; their row buffers are reused between steps from
    /// <paramref name="workspace"/>, which spares the page faults of fresh allocations of that size.
    /// </remarks>
    public static Tensor Apply(Tensor x, Tensor gates, Tensor indices, Tensor down, Tensor up, ExpertActivation activation,
        bool sparseGradients, ExpertGradientWorkspace? workspace = null) =>
        apply(x, gates, indices, down, up, (int)activation, sparseGradients, workspace!);

    public override unsafe Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var x = ((Tensor)vars[0]).contiguous();
        var gates = ((Tensor)vars[1]).contiguous();
        var indices = ((Tensor)vars[2]).contiguous();
        var down = (Tensor)vars[3];
        var up = (Tensor)vars[4];
        int activation = (int)vars[5];
        long tokens = x.shape[0], dimension = x.shape[1], slots = gates.shape[1], experts = down.shape[0];
        var y = empty(tokens, dimension);
        var hidden = empty(tokens, slots);
        float* px = PeerNativeLibrary.Pointer<float>(x, ScalarType.Float32, "x");
        float* pg = PeerNativeLibrary.Pointer<float>(gates, ScalarType.Float32, "gates");
        long* pi = PeerNativeLibrary.Pointer<long>(indices, ScalarType.Int64, "indices");
        float* py = PeerNativeLibrary.Pointer<float>(y, ScalarType.Float32, "y");
        float* ph = PeerNativeLibrary.Pointer<float>(hidden, ScalarType.Float32, "hidden");
        if (IsBFloat16(down, up))
            PeerNativeLibrary.Check(PeerNativeMethods.ExpertForwardBf16(px, pg, pi,
                PeerNativeLibrary.Pointer<ushort>(down, ScalarType.BFloat16, "down"),
                PeerNativeLibrary.Pointer<ushort>(up, ScalarType.BFloat16, "up"), tokens, slots, dimension, experts, activation, py, ph),
                "peer_expert_forward_bf16");
        else
            PeerNativeLibrary.Check(PeerNativeMethods.ExpertForward(px, pg, pi,
                PeerNativeLibrary.Pointer<float>(down, ScalarType.Float32, "down"),
                PeerNativeLibrary.Pointer<float>(up, ScalarType.Float32, "up"), tokens, slots, dimension, experts, activation, py, ph),
                "peer_expert_forward_f32");
        ctx.save_for_backward(new List<Tensor> { x, gates, indices, down, up, hidden });
        ctx.save_data("activation", activation);
        ctx.save_data("sparse", (bool)vars[6]);
        ctx.save_data("workspace", vars[7]);
        return y;
    }

    public override unsafe List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var saved = ctx.get_saved_variables();
        Tensor x = saved[0], gates = saved[1], indices = saved[2], down = saved[3], up = saved[4], hidden = saved[5];
        int activation = (int)ctx.get_data("activation");
        bool sparse = (bool)ctx.get_data("sparse");
        var dy = gradOutput.contiguous();
        long tokens = x.shape[0], dimension = x.shape[1], slots = gates.shape[1], experts = down.shape[0];
        // Sorted unique experts of this batch and each slot's position among them.
        var (rows, slotToRow) = UniqueRows(indices, experts);
        long uniqueCount = rows.shape[0];
        var dx = empty(tokens, dimension);
        var dgates = empty(tokens, slots);
        // Reuse the workspace unless a gradient from an earlier backward (which may alias it) is still held.
        var workspace = ctx.get_data("workspace") as ExpertGradientWorkspace;
        bool reuse = workspace is not null && down.grad is null && up.grad is null;
        var (downRows, upRows) = reuse
            ? workspace!.Rows(uniqueCount, dimension, Math.Min(experts, tokens * slots))
            : (empty(uniqueCount, dimension), empty(uniqueCount, dimension));
        float* px = PeerNativeLibrary.Pointer<float>(x, ScalarType.Float32, "x");
        float* pg = PeerNativeLibrary.Pointer<float>(gates, ScalarType.Float32, "gates");
        long* pi = PeerNativeLibrary.Pointer<long>(indices, ScalarType.Int64, "indices");
        float* ph = PeerNativeLibrary.Pointer<float>(hidden, ScalarType.Float32, "hidden");
        float* pdy = PeerNativeLibrary.Pointer<float>(dy, ScalarType.Float32, "dy");
        long* pr = PeerNativeLibrary.Pointer<long>(slotToRow, ScalarType.Int64, "slotToRow");
        float* pdx = PeerNativeLibrary.Pointer<float>(dx, ScalarType.Float32, "dx");
        float* pdg = PeerNativeLibrary.Pointer<float>(dgates, ScalarType.Float32, "dgates");
        float* pdu = PeerNativeLibrary.Pointer<float>(downRows, ScalarType.Float32, "dU");
        float* pdv = PeerNativeLibrary.Pointer<float>(upRows, ScalarType.Float32, "dV");
        if (IsBFloat16(down, up))
            PeerNativeLibrary.Check(PeerNativeMethods.ExpertBackwardBf16(px, pg, pi,
                PeerNativeLibrary.Pointer<ushort>(down, ScalarType.BFloat16, "down"),
                PeerNativeLibrary.Pointer<ushort>(up, ScalarType.BFloat16, "up"), ph, pdy, pr, uniqueCount,
                tokens, slots, dimension, experts, activation, pdx, pdg, pdu, pdv), "peer_expert_backward_bf16");
        else
            PeerNativeLibrary.Check(PeerNativeMethods.ExpertBackward(px, pg, pi,
                PeerNativeLibrary.Pointer<float>(down, ScalarType.Float32, "down"),
                PeerNativeLibrary.Pointer<float>(up, ScalarType.Float32, "up"), ph, pdy, pr, uniqueCount,
                tokens, slots, dimension, experts, activation, pdx, pdg, pdu, pdv), "peer_expert_backward_f32");
        using (no_grad())
        {
            Accumulate(down, rows, downRows, experts, dimension, sparse);
            Accumulate(up, rows, upRows, experts, dimension, sparse);
        }
        return new List<Tensor> { dx, dgates, null!, null!, null!, null!, null!, null! };
    }

    /// <summary>
    /// The sorted unique values of <paramref name="indices"/> and each one's position among them, as torch.unique(sorted,
    /// return_inverse) gives them, by peer_unique_rows: a bitmap over the N experts rather than torch's sort, which took
    /// longer than the backward kernel it feeds (docs/performance.md).
    /// </summary>
    internal static unsafe (Tensor Rows, Tensor Inverse) UniqueRows(Tensor indices, long experts)
    {
        var flat = indices.reshape(-1).contiguous();
        long count = flat.shape[0];
        if (count == 0) return (empty(0, dtype: ScalarType.Int64), empty(0, dtype: ScalarType.Int64));
        var rows = empty(count, dtype: ScalarType.Int64);
        var inverse = empty(count, dtype: ScalarType.Int64);
        long uniqueCount = 0;
        PeerNativeLibrary.Check(PeerNativeMethods.UniqueRows(PeerNativeLibrary.Pointer<long>(flat, ScalarType.Int64, "indices"), count,
            experts, PeerNativeLibrary.Pointer<long>(rows, ScalarType.Int64, "rows"),
            PeerNativeLibrary.Pointer<long>(inverse, ScalarType.Int64, "inverse"), &uniqueCount), "peer_unique_rows");
        return (rows.narrow(0, 0, uniqueCount), inverse);
    }

    // Both tables are bfloat16 (the bf16 kernels), or neither; a mixed pair fails in Pointer with the table's name.
    private static bool IsBFloat16(Tensor down, Tensor up) => down.dtype == ScalarType.BFloat16 || up.dtype == ScalarType.BFloat16;

    // The row gradients stay float32 whatever the table's storage: the row-sparse optimizer reads them in float32.
    private static void Accumulate(Tensor table, Tensor rows, Tensor values, long experts, long dimension, bool sparse)
    {
        if (!table.requires_grad) return;
        Tensor grad = sparse
            ? sparse_coo_tensor(rows.unsqueeze(0), values, new[] { experts, dimension })
            : zeros(experts, dimension).index_add_(0, rows, values, 1);
        table.grad = table.grad is null ? grad : table.grad + grad;
    }
}
