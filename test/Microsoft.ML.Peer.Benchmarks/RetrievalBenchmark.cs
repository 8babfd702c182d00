using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Native;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Benchmarks;

/// <summary>
/// Product-key retrieval of T·h queries over n² keys, three ways on the same queries and sub-keys, interleaved: the fused
/// native kernel (peer_product_key_topk_f32, what the layer runs), the sub-key scores by torch GEMM followed by the native
/// Cartesian top-k (peer_cartesian_topk_f32), and the managed composed path (GEMM + torch top-k).
/// </summary>
internal static class RetrievalBenchmark
{
    public static JsonObject Run(BenchmarkSettings settings)
    {
        long tokens = settings.Tokens, n = (long)Math.Round(Math.Sqrt(settings.Experts));
        int h = settings.Heads, dk = settings.KeyDimension, k = settings.TopK;
        Console.WriteLine($"retrieval: T = {tokens}, h = {h}, d_key = {dk}, n = {n} (N = {n * n:N0}), k = {k}; {settings.Steps} timed rounds");
        manual_seed(1);
        using var queries = randn(tokens, h, dk);
        using var native = new ProductKeyRetriever((int)n, dk, k, PeerKernels.Native);
        using var managed = new ProductKeyRetriever((int)n, dk, k, PeerKernels.Managed);
        using (no_grad()) managed.SubKeys.copy_(native.SubKeys);
        var fused = new Samples("fused native kernel (scores + top-k)");
        var gemm = new Samples("torch GEMM scores + native Cartesian top-k");
        var composed = new Samples("managed: torch GEMM + torch top-k");
        var gemmAlone = new Samples("  of the GEMM path: the two torch GEMMs alone");
        Tensor? fusedIndices = null, gemmIndices = null;
        for (int round = -1; round < settings.Steps; round++)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            long t0 = Stopwatch.GetTimestamp();
            var (_, i1) = native.forward(queries);
            long t1 = Stopwatch.GetTimestamp();
            var i2 = GemmThenCartesian(queries, native.SubKeys, n, dk, k);
            long t2 = Stopwatch.GetTimestamp();
            managed.forward(queries);
            long t3 = Stopwatch.GetTimestamp();
            var flat = queries.reshape(-1, dk);
            matmul(flat.narrow(1, 0, dk / 2), native.SubKeys[0].t()).contiguous();
            matmul(flat.narrow(1, dk / 2, dk / 2), native.SubKeys[1].t()).contiguous();
            long t4 = Stopwatch.GetTimestamp();
            if (round < 0) continue;
            fused.Add(Samples.Milliseconds(t0, t1));
            gemm.Add(Samples.Milliseconds(t1, t2));
            composed.Add(Samples.Milliseconds(t2, t3));
            gemmAlone.Add(Samples.Milliseconds(t3, t4));
            if (round == 0)
            {
                fusedIndices = i1.DetachFromDisposeScope();
                gemmIndices = i2.DetachFromDisposeScope();
            }
        }
        double agree = fusedIndices!.reshape(-1, k).eq(gemmIndices!.reshape(-1, k)).all(1).to(ScalarType.Float32).mean().item<float>();
        var table = new Table("retrieval", "min ms", "median ms", "max ms", "");
        table.Add(fused);
        table.Add(gemm);
        table.Add(gemmAlone);
        table.Add(composed);
        table.Print();
        double flops = 2.0 * tokens * h * 2 * n * (dk / 2);
        Console.WriteLine($"sub-key scoring FLOPs {flops / 1e9:F2} G: fused {flops / fused.Median / 1e6:F1} GFLOP/s, GEMMs alone {flops / gemmAlone.Median / 1e6:F1} GFLOP/s; GEMM path / fused = " +
                          $"{gemm.Median / fused.Median:F2}; rows with the same top-k indices: {agree:P2}");
        return new JsonObject
        {
            ["fused_ms"] = fused.ToJson(),
            ["gemm_then_cartesian_ms"] = gemm.ToJson(),
            ["managed_ms"] = composed.ToJson(),
            ["gemm_alone_ms"] = gemmAlone.ToJson(),
            ["gemm_gflops"] = Json.Round(flops / gemmAlone.Median / 1e6),
            ["fused_gflops"] = Json.Round(flops / fused.Median / 1e6),
            ["gemm_over_fused"] = Json.Round(gemm.Median / fused.Median),
            ["same_indices_fraction"] = Json.Round(agree),
        };
    }

    private static unsafe Tensor GemmThenCartesian(Tensor queries, Tensor subKeys, long n, int dk, int k)
    {
        var flat = queries.reshape(-1, dk);
        var s1 = matmul(flat.narrow(1, 0, dk / 2), subKeys[0].t()).contiguous();
        var s2 = matmul(flat.narrow(1, dk / 2, dk / 2), subKeys[1].t()).contiguous();
        long rows = flat.shape[0];
        var scores = empty(rows, k);
        var indices = empty(rows, k, dtype: ScalarType.Int64);
        PeerNativeLibrary.Check(PeerNativeMethods.CartesianTopK(
            PeerNativeLibrary.Pointer<float>(s1, ScalarType.Float32, "s1"), PeerNativeLibrary.Pointer<float>(s2, ScalarType.Float32, "s2"),
            rows, n, k, PeerNativeLibrary.Pointer<float>(scores, ScalarType.Float32, "scores"),
            PeerNativeLibrary.Pointer<long>(indices, ScalarType.Int64, "indices")), "peer_cartesian_topk_f32");
        return indices;
    }
}
