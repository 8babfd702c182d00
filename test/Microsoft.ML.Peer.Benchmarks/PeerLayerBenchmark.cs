using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Benchmarks;

/// <summary>
/// One training step of a PEER layer with composed (managed) kernels, with native kernels, and of a dense FFW of the
/// same active FLOPs, interleaved in one process; plus a breakdown of the native step, this machine's GEMM rate and
/// bandwidth, the FLOP/byte floor they imply, and peak resident memory.
/// </summary>
internal static class PeerLayerBenchmark
{
    public static void Run(BenchmarkSettings settings, JsonObject report)
    {
        int d = settings.Dimension, h = settings.Heads, k = settings.TopK, dk = settings.KeyDimension, m = h * k;
        long tokens = settings.Tokens, experts = settings.Experts, n = (long)Math.Round(Math.Sqrt(experts));
        long? residentAtStart = MemoryProbe.ResidentBytes();
        bool nativeAvailable = PeerNativeLibrary.IsAvailable;
        Console.WriteLine($"PEER layer step: N = {experts:N0}, d = {d}, h = {h}, k = {k}, d_key = {dk}, T = {tokens:N0}, {settings.Steps} timed steps per variant, torch threads {torch.get_num_threads()}");
        if (!nativeAvailable)
            Console.WriteLine("native kernels unavailable (see the warning above): timing the managed layer only; native fields are null.");
        Console.WriteLine();

        manual_seed(1);
        Console.WriteLine("measuring this machine's GEMM rate and bandwidth ...");
        var rates = MachineRates.Measure(settings.Steps);

        using var x = randn(tokens, d);
        using var w = randn(tokens, d);

        // The layer the breakdown and memory are about is built first and measured alone, so the peak resident
        // memory holds no other layer's tables.
        var subjectKernels = nativeAvailable ? PeerKernels.Native : PeerKernels.Managed;
        // The same layer with bfloat16 tables and moments, measured alone first for the same reason.
        Console.WriteLine($"building the {subjectKernels} layer with bf16 tables and measuring its peak memory ...");
        var (bf16PeakResident, bf16ParameterBytes) = PeakOfOneStep(
            () => new PeerTrainingStep("bf16", settings, subjectKernels, ExpertTablePrecision.BFloat16), x, w);
        Console.WriteLine($"building the {subjectKernels} layer and measuring its peak memory ...");
        var subject = new PeerTrainingStep(nativeAvailable ? "native step" : "composed step", settings, subjectKernels);
        PeerTrainingStep? composed = nativeAvailable ? null : subject;
        DenseTrainingStep? dense = null;
        PeerTrainingStep? bf16 = null;
        double? nativeStepMedian = null;
        try
        {
            subject.Run(x, w);   // warm-up: first-touch of optimizer rows, allocator growth
            long parameterBytes = subject.ParameterBytes;
            GC.Collect();
            GC.WaitForPendingFinalizers();
            long? residentBefore = MemoryProbe.ResidentBytes();
            bool peakReset = MemoryProbe.ResetPeak();
            subject.Run(x, w);
            long? peakResident = peakReset ? MemoryProbe.PeakResidentBytes() : null;

            Console.WriteLine("building the other variants ...");
            composed ??= new PeerTrainingStep("composed step", settings, PeerKernels.Managed);
            dense = new DenseTrainingStep($"dense FFW step (hidden {m})", d, m);
            bf16 = nativeAvailable ? new PeerTrainingStep("native step, bf16 tables", settings, PeerKernels.Native, ExpertTablePrecision.BFloat16)
                : null;
            var variants = new List<ITrainingStep> { composed };
            if (nativeAvailable) variants.Add(subject);
            if (bf16 is not null) variants.Add(bf16);
            variants.Add(dense);
            foreach (var variant in variants.Where(v => v != subject)) variant.Run(x, w);   // warm-up

            // A real retrieval: its unique rows size the backward and optimizer traffic and feed the kernel timing.
            using var retrieval = NewDisposeScope();
            Tensor gates, indices;
            using (no_grad())
            {
                var (g, i) = subject.Layer.Router.forward(x);
                gates = g.reshape(tokens, m).contiguous();
                indices = i.reshape(tokens, m).contiguous();
            }
            long uniqueRows = unique(indices.flatten()).Item1.shape[0];
            var kernelY = empty(tokens, d);
            var kernelHidden = empty(tokens, m);
            if (nativeAvailable)
                NativeExpertKernel.Forward(x, gates, indices, subject.Layer.DownWeights, subject.Layer.UpWeights, ExpertActivation.Gelu,
                    kernelY, kernelHidden);

            var samples = variants.ToDictionary(v => v, v => new StepSamples(v.Name));
            var routerForward = new Samples("  router forward alone (projection + BN + retrieval + softmax)");
            var kernelForward = new Samples("  expert forward kernel alone (peer_expert_forward_f32)");
            var kernelForwardIdle = new Samples("  same kernel after 100 ms idle (no torch op just before)");
            var rowReadProbe = new Samples("  reading the same u, v rows and nothing else (RandomRowReadProbe)");
            var routerBackward = new Samples("  router backward alone (of (gates·r).sum(): softmax, scores, BN, projection)");
            var gateWeights = randn(tokens, m);
            var kernelBackward = new Samples("  expert backward alone (peer_unique_rows + peer_expert_backward_f32)");
            var kernelDx = empty(tokens, d);
            var kernelDgates = empty(tokens, m);
            var kernelDown = empty(uniqueRows, d);
            var kernelUp = empty(uniqueRows, d);
            var torchUnique = new Samples("  unique slots by torch.unique (the backward's, before)");
            var nativeUnique = new Samples("  unique slots by peer_unique_rows (the backward's, now)");
            Console.WriteLine($"timing {settings.Steps} interleaved steps ...");
            Console.WriteLine();
            for (int step = 0; step < settings.Steps; step++)
            {
                // Rotate the order so no variant always runs right after the same neighbour.
                for (int j = 0; j < variants.Count; j++)
                {
                    var variant = variants[(step + j) % variants.Count];
                    samples[variant].Add(variant.Run(x, w));
                }
                routerForward.Add(subject.RouterForward(x));
                routerBackward.Add(subject.RouterBackward(x, gateWeights));
                if (nativeAvailable)
                {
                    long start = Stopwatch.GetTimestamp();
                    NativeExpertKernel.Forward(x, gates, indices, subject.Layer.DownWeights, subject.Layer.UpWeights, ExpertActivation.Gelu,
                        kernelY, kernelHidden);
                    kernelForward.Add(Samples.Milliseconds(start, Stopwatch.GetTimestamp()));
                    // Right after torch ops libtorch's OpenMP workers may still spin; after a pause they sleep.
                    Thread.Sleep(100);
                    start = Stopwatch.GetTimestamp();
                    NativeExpertKernel.Forward(x, gates, indices, subject.Layer.DownWeights, subject.Layer.UpWeights, ExpertActivation.Gelu,
                        kernelY, kernelHidden);
                    kernelForwardIdle.Add(Samples.Milliseconds(start, Stopwatch.GetTimestamp()));
                }
                if (nativeAvailable)
                {
                    using var uniqueScope = NewDisposeScope();
                    long u0 = Stopwatch.GetTimestamp();
                    unique(indices.reshape(-1), sorted: true, return_inverse: true);
                    long u1 = Stopwatch.GetTimestamp();
                    FusedExpertFunction.UniqueRows(indices, experts);
                    long b0 = Stopwatch.GetTimestamp();
                    NativeExpertKernel.Backward(x, gates, indices, subject.Layer.DownWeights, subject.Layer.UpWeights, ExpertActivation.Gelu,
                        kernelHidden, w, kernelDx, kernelDgates, kernelDown, kernelUp);
                    torchUnique.Add(Samples.Milliseconds(u0, u1));
                    nativeUnique.Add(Samples.Milliseconds(u1, b0));
                    kernelBackward.Add(Samples.Milliseconds(b0, Stopwatch.GetTimestamp()));
                }
                long probeStart = Stopwatch.GetTimestamp();
                RandomRowReadProbe.Read(indices, subject.Layer.DownWeights, subject.Layer.UpWeights);
                rowReadProbe.Add(Samples.Milliseconds(probeStart, Stopwatch.GetTimestamp()));
            }

            // FLOPs per step, forward + backward counted as 3× the forward (backward takes two products per forward one).
            double queryFlops = 3.0 * 2 * tokens * d * (h * dk);
            double subKeyFlops = 3.0 * 2 * tokens * h * 2 * n * (dk / 2);
            double expertFlops = 3.0 * 2 * tokens * h * k * d * 2;
            double layerFlops = queryFlops + subKeyFlops + expertFlops;
            // Expert-row bytes per step (fp32).
            double rowBytes = d * sizeof(float);
            double forwardBytes = tokens * m * 2 * rowBytes;
            double backwardBytes = tokens * m * 2 * rowBytes + uniqueRows * 2 * rowBytes;
            double optimizerBytes = 2 * uniqueRows * rowBytes * 7;
            double expertBytes = forwardBytes + backwardBytes + optimizerBytes;
            double floorMs = layerFlops / (rates.SgemmGflops * 1e9) * 1e3 + expertBytes / (rates.StreamGbps * 1e9) * 1e3;
            // With bf16 tables and moments: rows read in the forward and backward and p, m, v in the optimizer are half the
            // bytes; row gradients stay fp32.
            double bf16ForwardBytes = forwardBytes / 2;
            double bf16BackwardBytes = tokens * m * 2 * rowBytes / 2 + uniqueRows * 2 * rowBytes;
            double bf16OptimizerBytes = 2 * uniqueRows * (rowBytes / 2 * 6 + rowBytes);
            double bf16ExpertBytes = bf16ForwardBytes + bf16BackwardBytes + bf16OptimizerBytes;
            double bf16FloorMs = layerFlops / (rates.SgemmGflops * 1e9) * 1e3 + bf16ExpertBytes / (rates.StreamGbps * 1e9) * 1e3;
            var bf16Samples = bf16 is not null ? samples[bf16] : null;
            double? bf16Median = bf16Samples?.Step.Median;

            var composedSamples = samples[composed];
            var nativeSamples = nativeAvailable ? samples[subject] : null;
            var denseSamples = samples[dense];
            var subjectSamples = samples[subject];
            double? nativeMedian = nativeSamples?.Step.Median;
            nativeStepMedian = nativeMedian;
            double expertForwardDerived = subjectSamples.Forward.Median - routerForward.Median;
            double? kernelGbps = nativeAvailable ? forwardBytes / (kernelForward.Median / 1e3) / 1e9 : null;
            double rowReadGbps = forwardBytes / (rowReadProbe.Median / 1e3) / 1e9;
            double? derivedGbps = expertForwardDerived > 0 ? forwardBytes / (expertForwardDerived / 1e3) / 1e9 : null;

            var table = new Table("training step", "min ms", "median ms", "max ms", "");
            table.Add(composedSamples.Step);
            if (nativeSamples is not null) table.Add(nativeSamples.Step);
            if (bf16Samples is not null) table.Add(bf16Samples.Step);
            table.Add(denseSamples.Step);
            Console.WriteLine("== one training step, T tokens ==");
            table.Print();

            Console.WriteLine($"== breakdown of the {subject.Name} ({subject.Kernels} kernels) ==");
            var breakdown = new Table("section", "min ms", "median ms", "max ms", "");
            breakdown.Add(subjectSamples.Forward);
            breakdown.Add(routerForward);
            breakdown.Add($"  expert forward = layer forward - router forward (medians)", "", Table.Format(expertForwardDerived), "", "ms");
            if (nativeAvailable)
            {
                breakdown.Add(kernelForward);
                breakdown.Add(kernelForwardIdle);
                breakdown.Add(rowReadProbe);
            }
            breakdown.Add(subjectSamples.Backward);
            if (nativeAvailable)
            {
                breakdown.Add(kernelBackward);
                breakdown.Add(routerBackward);
                breakdown.Add("  rest of the backward (router, loss, autograd, gradient tables) = backward - expert backward", "",
                    Table.Format(subjectSamples.Backward.Median - kernelBackward.Median), "", "ms");
                breakdown.Add(torchUnique);
                breakdown.Add(nativeUnique);
            }
            breakdown.Add(subjectSamples.Optimizer);
            breakdown.Print();

            Console.WriteLine("== this machine and the floor ==");
            var metrics = new Table("quantity", "value", "unit");
            metrics.Add("sgemm (torch.mm 2048²), median", Table.Format(rates.SgemmGflops), "GFLOP/s");
            metrics.Add("bandwidth: copy / add_ 512 MiB, median", $"{Table.Format(rates.CopyGbps)} / {Table.Format(rates.AddGbps)}",
                "GB/s");
            metrics.Add("stream_gbps (the larger)", Table.Format(rates.StreamGbps), "GB/s");
            metrics.Add("random_row_read_gbps", Table.Format(rowReadGbps), "GB/s");
            metrics.Add("layer FLOPs per step (fwd+bwd)", Table.Format(layerFlops / 1e9), "GFLOP");
            metrics.Add("unique experts touched", uniqueRows.ToString("N0", CultureInfo.InvariantCulture), $"of {experts:N0}");
            metrics.Add("expert-row bytes per step", Table.Format(expertBytes / 1e9), "GB");
            metrics.Add("floor = FLOPs/sgemm + bytes/bandwidth", Table.Format(floorMs), "ms");
            metrics.Add("expert-row bytes per step, bf16 tables and moments", Table.Format(bf16ExpertBytes / 1e9), "GB");
            metrics.Add("floor with bf16 bytes", Table.Format(bf16FloorMs), "ms");
            if (kernelGbps is { } kg) metrics.Add("native expert forward kernel rate", Table.Format(kg), "GB/s");
            if (derivedGbps is { } dg) metrics.Add($"expert forward rate, derived ({subject.Kernels})", Table.Format(dg), "GB/s");
            long? hugePageBytes = MemoryProbe.AnonHugePageBytes();
            metrics.Add("parameter bytes of the layer", Table.Format(parameterBytes / 1e9), "GB");
            metrics.Add("process memory in transparent huge pages", Gigabytes(hugePageBytes), "GB");
            metrics.Add("RSS at start / before the measured step", $"{Gigabytes(residentAtStart)} / {Gigabytes(residentBefore)}", "GB");
            metrics.Add($"peak RSS of a {subject.Kernels} step", peakResident is { } pr ? Table.Format(pr / 1e9) : "n/a", "GB");
            metrics.Add("peak RSS / parameter bytes (target <= 3.5)",
                peakResident is { } p2 ? Table.Format((double)p2 / parameterBytes) : "n/a", "");
            metrics.Add($"parameter bytes with bf16 tables", Table.Format(bf16ParameterBytes / 1e9), "GB");
            metrics.Add($"peak RSS of a {subject.Kernels} step with bf16 tables", Gigabytes(bf16PeakResident), "GB");
            metrics.Add("peak RSS (bf16) / fp32 parameter bytes (target <= 2.0)",
                bf16PeakResident is { } p4 ? Table.Format((double)p4 / parameterBytes) : "n/a", "");
            metrics.Print();

            Console.WriteLine("== ratios ==");
            var ratios = new Table("ratio", "value");
            if (nativeMedian is { } nm)
            {
                ratios.Add("composed / native (step medians)", Table.Format(composedSamples.Step.Median / nm));
                ratios.Add("native / floor", Table.Format(nm / floorMs));
                ratios.Add("native / dense FFW", Table.Format(nm / denseSamples.Step.Median));
                if (bf16Median is { } bm)
                {
                    ratios.Add("native bf16 / fp32 floor (target <= 0.8)", Table.Format(bm / floorMs));
                    ratios.Add("native bf16 / bf16 floor", Table.Format(bm / bf16FloorMs));
                    ratios.Add("native bf16 / native fp32", Table.Format(bm / nm));
                    ratios.Add("composed / native bf16", Table.Format(composedSamples.Step.Median / bm));
                }
                if (kernelGbps is { } kg2) ratios.Add("native expert fwd GB/s / stream GB/s", Table.Format(kg2 / rates.StreamGbps));
                if (kernelGbps is { } kg3) ratios.Add("native expert fwd GB/s / random-row read GB/s", Table.Format(kg3 / rowReadGbps));
                ratios.Add("random-row read GB/s / stream GB/s", Table.Format(rowReadGbps / rates.StreamGbps));
            }
            ratios.Add("composed / floor", Table.Format(composedSamples.Step.Median / floorMs));
            ratios.Add("composed / dense FFW", Table.Format(composedSamples.Step.Median / denseSamples.Step.Median));
            ratios.Print();

            report["configuration"] = new JsonObject
            {
                ["experts"] = experts,
                ["dimension"] = d,
                ["heads"] = h,
                ["top_k"] = k,
                ["key_dimension"] = dk,
                ["sparse_gradients"] = true,
                ["dense_ffw_hidden"] = m,
                ["timed_steps"] = settings.Steps,
                ["warmup_steps"] = 1,
                ["loss"] = "(y * w).sum() for fixed random x [T, d] and w [T, d]",
                ["optimizers"] = "PEER: SparseRowAdamW (same kernels as the layer) on the two tables + torch AdamW on the router; dense: torch AdamW; lr 1e-3, weight decay 0.1",
                ["order"] = "variants interleaved, order rotated every step; each variant ran one untimed warm-up step",
            };
            report["tokens"] = tokens;
            report["composed_step_ms"] = composedSamples.Step.ToJson();
            report["native_step_ms"] = nativeSamples?.Step.ToJson();
            report["native_bf16_step_ms"] = bf16Samples?.Step.ToJson();
            report["native_bf16_breakdown_ms"] = bf16Samples is not null ? PhaseJson(bf16Samples) : null;
            report["bf16_expert_bytes"] = bf16ExpertBytes;
            report["bf16_floor_ms"] = Json.Round(bf16FloorMs);
            report["bf16_expert_bytes_counting"] =
                "as expert_bytes with bf16 rows (d*2 bytes) for u, v and the moments; row gradients fp32: forward T*h*k*2*d*2; backward " +
                "T*h*k*2*d*2 + U*2*d*4; optimizer 2*U*(6*d*2 + d*4) (reads p, m, v and g, writes p, m, v)";
            report["bf16_peak_rss_bytes"] = bf16PeakResident;
            report["bf16_parameter_bytes"] = bf16ParameterBytes;
            report["bf16_peak_rss_over_fp32_parameters"] = bf16PeakResident is { } p5 ? Json.Round((double)p5 / parameterBytes) : null;
            report["dense_ffw_step_ms"] = denseSamples.Step.ToJson();
            if (!nativeAvailable) report["native_unavailable_reason"] = PeerNativeLibrary.UnavailableReason;
            report["composed_breakdown_ms"] = PhaseJson(composedSamples);
            var breakdownJson = PhaseJson(subjectSamples);
            breakdownJson["kernels"] = subject.Kernels.ToString();
            breakdownJson["router_forward_ms"] = routerForward.ToJson();
            breakdownJson["expert_forward_derived_ms"] = Json.Round(expertForwardDerived);
            breakdownJson["expert_forward_kernel_ms"] = nativeAvailable ? kernelForward.ToJson() : null;
            breakdownJson["expert_forward_kernel_after_idle_ms"] = nativeAvailable ? kernelForwardIdle.ToJson() : null;
            breakdownJson["random_row_read_probe_ms"] = rowReadProbe.ToJson();
            breakdownJson["router_backward_ms"] = routerBackward.ToJson();
            breakdownJson["expert_backward_kernel_ms"] = nativeAvailable ? kernelBackward.ToJson() : null;
            breakdownJson["torch_unique_ms"] = nativeAvailable ? torchUnique.ToJson() : null;
            breakdownJson["peer_unique_rows_ms"] = nativeAvailable ? nativeUnique.ToJson() : null;
            breakdownJson["sections"] =
                "layer_forward: PeerLayer.forward (router + experts) with autograd; router_forward: Router.forward alone, timed separately with autograd on; " +
                "expert_forward_derived: median layer_forward - median router_forward; expert_forward_kernel: peer_expert_forward_f32 called directly " +
                "on a real retrieval (what FusedExpertFunction.forward runs), right after the router forward's torch ops; expert_forward_kernel_after_idle: the same call after a 100 ms sleep; backward: (y*w).sum() and loss.backward() (router + experts); " +
                "optimizer: torch AdamW on the router + SparseRowAdamW on both tables.";
            report[nativeAvailable ? "native_breakdown_ms" : "managed_breakdown_ms"] = breakdownJson;
            report["layer_flops"] = layerFlops;
            report["layer_flops_parts"] =
                new JsonObject { ["query_projection"] = queryFlops, ["sub_key_scoring"] = subKeyFlops, ["experts"] = expertFlops };
            report["flops_counting"] =
                "per step, forward + backward = 3 x forward: query projection 2*T*d*(h*d_key) x3; sub-key scoring 2*T*h*2*n*(d_key/2) x3 (n = sqrt(N)); " +
                "experts 2*T*h*k*d*2 x3 (u.x and g*s*v per slot). Not counted: batch norm, top-k selection, softmax, the optimizer's arithmetic.";
            report["unique_experts"] = uniqueRows;
            report["expert_bytes"] = expertBytes;
            report["expert_bytes_parts"] =
                new JsonObject { ["forward"] = forwardBytes, ["backward"] = backwardBytes, ["optimizer"] = optimizerBytes };
            report["expert_bytes_counting"] =
                "fp32 expert rows: forward reads u and v rows per slot T*h*k*2*d*4; backward reads them again (T*h*k*2*d*4) and writes the unique rows' " +
                "gradients U*2*d*4; the optimizer reads p, g, m, v and writes p, m, v of each unique row of each table 2*U*d*4*7. " +
                "U = unique experts of a real retrieval of x by the measured layer. Router parameters, activations and row step counters not counted.";
            report["machine_rates"] = rates.ToJson();
            report["sgemm_gflops"] = Json.Round(rates.SgemmGflops);
            report["stream_gbps"] = Json.Round(rates.StreamGbps);
            report["floor_ms"] = Json.Round(floorMs);
            report["native_expert_fwd_gbps"] = Json.Number(kernelGbps);
            report["random_row_read_gbps"] = Json.Round(rowReadGbps);
            report["random_row_read_counting"] = "the same T*h*k*2*d*4 bytes read by RandomRowReadProbe (same indices and tables, one thread per core, prefetch 4 slots ahead, rows summed)";
            report["native_expert_fwd_gbps_counting"] =
                "T*h*k*2*d*4 bytes of expert rows read / median time of a direct peer_expert_forward_f32 call";
            report["expert_fwd_derived_gbps"] = Json.Number(derivedGbps);
            report["anon_huge_page_bytes"] = hugePageBytes;
            report["peak_rss_bytes"] = peakResident;
            report["peak_rss_kernels"] = subject.Kernels.ToString();
            report["rss_at_start_bytes"] = residentAtStart;
            report["rss_before_step_bytes"] = residentBefore;
            report["peak_rss_counting"] = peakReset
                ? "VmHWM after one training step, reset (clear_refs 5) just before it; the process then held only this layer, its optimizers and x, w (built and measured before the other variants)"
                : "clear_refs could not be written here; peak not measured";
            report["parameter_bytes"] = parameterBytes;
            report["peak_rss_over_parameters"] = peakResident is { } p3 ? Json.Round((double)p3 / parameterBytes) : null;
            report["ratios"] = new JsonObject
            {
                ["composed_over_native"] = Json.Number(composedSamples.Step.Median / nativeMedian),
                ["native_over_floor"] = Json.Number(nativeMedian / floorMs),
                ["native_over_dense_ffw"] = Json.Number(nativeMedian / denseSamples.Step.Median),
                ["native_bf16_over_fp32_floor"] = Json.Number(bf16Median / floorMs),
                ["native_bf16_over_bf16_floor"] = Json.Number(bf16Median / bf16FloorMs),
                ["native_bf16_over_native"] = Json.Number(bf16Median / nativeMedian),
                ["composed_over_native_bf16"] = Json.Number(composedSamples.Step.Median / bf16Median),
                ["native_expert_fwd_over_stream"] = Json.Number(kernelGbps / rates.StreamGbps),
                ["native_expert_fwd_over_random_row_read"] = Json.Number(kernelGbps / rowReadGbps),
                ["random_row_read_over_stream"] = Json.Number(rowReadGbps / rates.StreamGbps),
                ["composed_over_floor"] = Json.Number(composedSamples.Step.Median / floorMs),
                ["composed_over_dense_ffw"] = Json.Number(composedSamples.Step.Median / denseSamples.Step.Median),
            };
        }
        finally
        {
            dense?.Dispose();
            bf16?.Dispose();
            if (composed != subject) composed?.Dispose();
            subject.Dispose();
        }

        // The peer a user would pick instead: the same step composed in PyTorch, run after this process has freed its
        // layers (both at once would not fit in memory here).
        // Tensors of the variants that no scope disposed are released by their finalizers; without this the process kept
        // 13 GB while PyTorch's step needed 11 GB, and the kernel's OOM killer ended the run.
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        Console.WriteLine($"resident memory before the PyTorch step: {Gigabytes(MemoryProbe.ResidentBytes())} GB");
        report["pytorch"] = PyTorchReference.Run(settings, nativeStepMedian);
    }

    // Builds a step, runs a warm-up step, then measures the peak resident memory of one more; disposes it.
    private static (long? PeakResident, long ParameterBytes) PeakOfOneStep(Func<PeerTrainingStep> build, Tensor x, Tensor w)
    {
        using var step = build();
        step.Run(x, w);
        long parameterBytes = step.ParameterBytes;
        GC.Collect();
        GC.WaitForPendingFinalizers();
        bool reset = MemoryProbe.ResetPeak();
        step.Run(x, w);
        return (reset ? MemoryProbe.PeakResidentBytes() : null, parameterBytes);
    }

    private static string Gigabytes(long? bytes) => bytes is { } b ? Table.Format(b / 1e9) : "n/a";

    private static JsonObject PhaseJson(StepSamples samples) => new()
    {
        ["layer_forward_ms"] = samples.Forward.ToJson(),
        ["backward_ms"] = samples.Backward.ToJson(),
        ["optimizer_ms"] = samples.Optimizer.ToJson(),
    };
}
