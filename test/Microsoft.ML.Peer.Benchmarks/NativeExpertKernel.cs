using System.Runtime.InteropServices;
using Microsoft.ML.Peer.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Benchmarks;

/// <summary>
/// Direct call of peer_expert_forward_f32, the kernel FusedExpertFunction runs in the layer's forward (that class
/// is internal). Timing it alone on a real retrieval isolates the expert forward from routing and autograd.
/// Only used when PeerNativeLibrary.IsAvailable, which has already checked the library's ABI version.
/// </summary>
internal static class NativeExpertKernel
{
    [DllImport("peer_native", EntryPoint = "peer_expert_forward_f32")]
    private static extern int ExpertForward(IntPtr x, IntPtr gates, IntPtr indices, IntPtr u, IntPtr v,
        long tokens, long slots, long dimension, long experts, int activation, IntPtr y, IntPtr hidden);

    [DllImport("peer_native", EntryPoint = "peer_last_error")]
    private static extern IntPtr LastError();

    // The library reads tensor storage the same way (Native/PeerNativeMethods.cs).
    [DllImport("LibTorchSharp", EntryPoint = "THSTensor_data")]
    internal static extern IntPtr TensorData(IntPtr tensor);

    /// <summary>y, hidden ← experts(x; gates, indices). All tensors contiguous float32 / int64 on the CPU.</summary>
    public static void Forward(Tensor x, Tensor gates, Tensor indices, Tensor down, Tensor up, ExpertActivation activation, Tensor y,
        Tensor hidden)
    {
        foreach (var t in new[] { x, gates, indices, down, up, y, hidden })
            if (!t.is_contiguous() || t.device_type != DeviceType.CPU)
                throw new ArgumentException("The native expert kernel needs contiguous CPU tensors.");
        int status = ExpertForward(TensorData(x.Handle), TensorData(gates.Handle), TensorData(indices.Handle), TensorData(down.Handle),
            TensorData(up.Handle),
            x.shape[0], gates.shape[1], x.shape[1], down.shape[0], (int)activation, TensorData(y.Handle), TensorData(hidden.Handle));
        if (status != 0)
            throw new InvalidOperationException(
                $"peer_expert_forward_f32 failed with status {status}: {Marshal.PtrToStringUTF8(LastError())}");
    }

    /// <summary>
    /// The expert backward as FusedExpertFunction.backward runs it on a real retrieval: the unique rows, then
    /// peer_expert_backward_f32 into fresh dx, dgates and row-gradient buffers (allocated here, as a step would reuse them).
    /// </summary>
    public static unsafe void Backward(Tensor x, Tensor gates, Tensor indices, Tensor down, Tensor up, ExpertActivation activation,
        Tensor hidden, Tensor dy, Tensor dx, Tensor dgates, Tensor downRows, Tensor upRows)
    {
        var (rows, slotToRow) = Microsoft.ML.Peer.Layers.FusedExpertFunction.UniqueRows(indices, down.shape[0]);
        long unique = rows.shape[0];
        Microsoft.ML.Peer.Native.PeerNativeLibrary.Check(Microsoft.ML.Peer.Native.PeerNativeMethods.ExpertBackward(
            (float*)TensorData(x.Handle), (float*)TensorData(gates.Handle), (long*)TensorData(indices.Handle),
            (float*)TensorData(down.Handle), (float*)TensorData(up.Handle), (float*)TensorData(hidden.Handle),
            (float*)TensorData(dy.Handle), (long*)TensorData(slotToRow.Handle), unique, x.shape[0], gates.shape[1], x.shape[1],
            down.shape[0], (int)activation, (float*)TensorData(dx.Handle), (float*)TensorData(dgates.Handle),
            (float*)TensorData(downRows.Handle), (float*)TensorData(upRows.Handle)), "peer_expert_backward_f32");
    }
}
