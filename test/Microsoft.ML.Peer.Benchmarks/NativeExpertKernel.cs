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
}
