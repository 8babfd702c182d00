using System.Runtime.InteropServices;

namespace Microsoft.ML.Peer.Native;

/// <summary>P/Invoke surface of libpeer_native (src/Peer.Native/include/peer_native.h). Raw pointers, sizes, status codes.</summary>
internal static unsafe class PeerNativeMethods
{
    private const string Library = "peer_native";

    public const int Ok = 0;

    [DllImport(Library, EntryPoint = "peer_abi_version")]
    public static extern int AbiVersion();

    [DllImport(Library, EntryPoint = "peer_last_error")]
    public static extern IntPtr LastError();

    [DllImport(Library, EntryPoint = "peer_set_num_threads")]
    public static extern void SetNumThreads(int threads);

    [DllImport(Library, EntryPoint = "peer_product_key_topk_f32")]
    public static extern int ProductKeyTopK(float* queries, float* subKeys, long rows, long n, long keyDimension, long k, float* scores,
        long* indices);

    [DllImport(Library, EntryPoint = "peer_cartesian_topk_f32")]
    public static extern int CartesianTopK(float* s1, float* s2, long rows, long n, long k, float* scores, long* indices);

    [DllImport(Library, EntryPoint = "peer_selected_key_backward_f32")]
    public static extern int SelectedKeyBackward(float* queries, float* subKeys, long* indices, float* dscores, long rows, long n,
        long keyDimension, long k, float* dqueries, float* dsubKeys);

    [DllImport(Library, EntryPoint = "peer_expert_forward_f32")]
    public static extern int ExpertForward(float* x, float* gates, long* indices, float* u, float* v, long tokens, long slots,
        long dimension, long experts, int activation, float* y, float* hidden);

    [DllImport(Library, EntryPoint = "peer_expert_backward_f32")]
    public static extern int ExpertBackward(float* x, float* gates, long* indices, float* u, float* v, float* hidden, float* dy,
        long* slotToRow, long uniqueCount,
        long tokens, long slots, long dimension, long experts, int activation, float* dx, float* dgates, float* duRows, float* dvRows);

    [DllImport(Library, EntryPoint = "peer_expert_forward_bf16")]
    public static extern int ExpertForwardBf16(float* x, float* gates, long* indices, ushort* u, ushort* v, long tokens, long slots,
        long dimension, long experts, int activation, float* y, float* hidden);

    [DllImport(Library, EntryPoint = "peer_expert_backward_bf16")]
    public static extern int ExpertBackwardBf16(float* x, float* gates, long* indices, ushort* u, ushort* v, float* hidden, float* dy,
        long* slotToRow, long uniqueCount,
        long tokens, long slots, long dimension, long experts, int activation, float* dx, float* dgates, float* duRows, float* dvRows);

    [DllImport(Library, EntryPoint = "peer_sparse_adamw_bf16")]
    public static extern int SparseAdamWBf16(ushort* param, ushort* expAvg, ushort* expAvgSq, long* rowSteps, long experts, long dimension,
        long* rows, float* rowGrads, long count,
        float lr, float beta1, float beta2, float eps, float weightDecay, float gradScale, ulong seed);

    [DllImport(Library, EntryPoint = "peer_unique_rows")]
    public static extern int UniqueRows(long* indices, long count, long experts, long* rows, long* inverse, long* uniqueCount);

    [DllImport(Library, EntryPoint = "peer_sparse_adamw_f32")]
    public static extern int SparseAdamW(float* param, float* expAvg, float* expAvgSq, long* rowSteps, long experts, long dimension,
        long* rows, float* rowGrads, long count,
        float lr, float beta1, float beta2, float eps, float weightDecay, float gradScale);

    [DllImport(Library, EntryPoint = "peer_advise_hugepages")]
    public static extern int AdviseHugePages(void* pointer, long bytes, long* advisedBytes);

    // Exported by TorchSharp's native library: the data pointer of a tensor handle.
    [DllImport("LibTorchSharp", EntryPoint = "THSTensor_data")]
    public static extern IntPtr TensorData(IntPtr tensor);
}
