using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Native;
using Microsoft.ML.Peer.Training;
using TorchSharp;

namespace Microsoft.ML.Peer.Benchmarks;

/// <summary>
/// LanguageModelTrainingLoop.TrainStep of a 4-layer LM whose middle block is PEER, against the same LM with that block's FFW
/// dense of hidden h·k (equal active FLOPs per token, routing aside). The other blocks' dense FFWs also use hidden h·k,
/// because the model options set one dense width for all blocks: the two models then differ in the PEER block only.
/// </summary>
internal static class LanguageModelBenchmark
{
    public const int Vocabulary = 8192;
    public const int SequenceLength = 128;
    public const int Layers = 4;
    public const int AttentionHeads = 4;

    public static JsonObject Run(BenchmarkSettings settings)
    {
        int d = settings.Dimension, hidden = settings.Heads * settings.TopK;
        int tokensPerBatch = settings.TokensGiven ? settings.Tokens : 1024;
        int batch = Math.Max(1, tokensPerBatch / SequenceLength);
        bool nativeAvailable = PeerNativeLibrary.IsAvailable;
        var peerKernels = nativeAvailable ? PeerKernels.Native : PeerKernels.Managed;
        Console.WriteLine($"LM training step: d = {d}, {Layers} layers, vocab {Vocabulary}, batch {batch}x{SequenceLength} tokens; " +
                          $"PEER (N = {settings.Experts:N0}, {peerKernels} kernels) in block {Layers / 2} vs dense FFW hidden {hidden}; {settings.Steps} timed steps each");

        var random = new Random(7);
        var stream = Enumerable.Range(0, 1 << 16).Select(_ => random.Next(Vocabulary)).ToArray();
        var sampler = new TokenBatchSampler(stream, batch, SequenceLength, seed: 3);
        var training = new LanguageModelTrainingOptions
        {
            BatchSize = batch, SequenceLength = SequenceLength, WarmupSteps = 0, MaxSteps = 1_000_000, LogEvery = 1_000_000
        };

        LanguageModelOptions Options(FeedForwardKind kind, ExpertTablePrecision precision = ExpertTablePrecision.Float32) => new()
        {
            VocabularySize = Vocabulary,
            ContextLength = SequenceLength,
            ModelDimension = d,
            Layers = Layers,
            AttentionHeads = AttentionHeads,
            DenseHiddenDimension = hidden,
            FeedForward = kind,
            Peer = new PeerOptions
            {
                Experts = settings.Experts,
                Heads = settings.Heads,
                TopK = settings.TopK,
                KeyDimension = settings.KeyDimension,
                SparseGradients = true,
                Kernels = peerKernels,
                ExpertTablePrecision = precision,
            },
        };

        using var peer = new LanguageModelTrainingLoop(Options(FeedForwardKind.Peer), training);
        using var dense = new LanguageModelTrainingLoop(Options(FeedForwardKind.Dense), training);
        // The same PEER LM with bfloat16 expert tables and moments (same seed, so the same weights rounded).
        using var peerBf16 = new LanguageModelTrainingLoop(Options(FeedForwardKind.Peer, ExpertTablePrecision.BFloat16), training);
        var variants = new (string Name, LanguageModelTrainingLoop Trainer, Samples Samples)[]
        {
            ($"PEER LM ({peerKernels})", peer, new Samples($"PEER LM step ({peerKernels})")),
            ("dense LM", dense, new Samples($"dense LM step (block {Layers / 2} FFW hidden {hidden})")),
            ($"PEER LM bf16 ({peerKernels})", peerBf16, new Samples($"PEER LM step, bf16 tables ({peerKernels})")),
        };
        foreach (var (_, trainer, _) in variants) trainer.TrainStep(sampler);   // warm-up
        for (int step = 0; step < settings.Steps; step++)
        {
            for (int j = 0; j < variants.Length; j++)
            {
                var (_, trainer, samples) = variants[(step + j) % variants.Length];
                long start = Stopwatch.GetTimestamp();
                trainer.TrainStep(sampler);
                samples.Add(Samples.Milliseconds(start, Stopwatch.GetTimestamp()));
            }
        }

        // Where each step's time goes: forward + loss alone, forward + loss + backward (the difference is backward), and the
        // whole step (the difference is clipping and the optimizers); for the PEER model also its PEER layer's forward on a
        // batch of the same size, router alone and whole layer. Interleaved like the steps.
        var phases = variants.ToDictionary(v => v.Name,
            v => (Forward: new Samples("forward + loss"), ForwardBackward: new Samples("+ backward")));
        var peerLayer = peer.Model.Blocks[Layers / 2].FeedForward as PeerLayer
            ?? throw new InvalidOperationException($"block {Layers / 2} of the PEER model is not a PEER layer");
        var layerForward = new Samples("PEER layer forward");
        var routerForward = new Samples("router forward");
        using (var layerInput = torch.randn(batch * SequenceLength, d))
        {
            for (int step = 0; step < settings.Steps; step++)
            {
                foreach (var (name, trainer, _) in step % 2 == 0 ? variants : variants.Reverse())
                {
                    foreach (bool backward in new[] { false, true })
                    {
                        using var scope = torch.NewDisposeScope();
                        var (inputs, targets) = sampler.Batch(step);
                        long start = Stopwatch.GetTimestamp();
                        var (loss, _) = trainer.Model.Loss(inputs, targets);
                        if (backward) loss.backward();
                        _ = loss.item<float>();
                        double ms = Samples.Milliseconds(start, Stopwatch.GetTimestamp());
                        (backward ? phases[name].ForwardBackward : phases[name].Forward).Add(ms);
                        foreach (var parameter in trainer.Model.parameters()) parameter.grad = null;
                    }
                }
                using (var scope = torch.NewDisposeScope())
                using (torch.no_grad())
                {
                    long start = Stopwatch.GetTimestamp();
                    peerLayer.Router.forward(layerInput);
                    long routed = Stopwatch.GetTimestamp();
                    peerLayer.forward(layerInput);
                    routerForward.Add(Samples.Milliseconds(start, routed));
                    layerForward.Add(Samples.Milliseconds(routed, Stopwatch.GetTimestamp()));
                }
            }
        }
        var parts = new Table("LM step, part by part (medians, ms)", "PEER LM", "dense LM", "PEER - dense", "PEER bf16", "bf16 - dense");
        void Part(string label, double p, double q, double b) =>
            parts.Add(label, Table.Format(p), Table.Format(q), Table.Format(p - q), Table.Format(b), Table.Format(b - q));
        var (pf, pfb) = phases[variants[0].Name];
        var (df, dfb) = phases[variants[1].Name];
        var (bf, bfb) = phases[variants[2].Name];
        Part("forward + loss", pf.Median, df.Median, bf.Median);
        Part("backward (forward+backward - forward)", pfb.Median - pf.Median, dfb.Median - df.Median, bfb.Median - bf.Median);
        Part("clip + optimizers (step - forward+backward)", variants[0].Samples.Median - pfb.Median,
            variants[1].Samples.Median - dfb.Median, variants[2].Samples.Median - bfb.Median);
        Part("whole step", variants[0].Samples.Median, variants[1].Samples.Median, variants[2].Samples.Median);
        parts.Add("  PEER layer forward alone, no grad (router + experts)", Table.Format(layerForward.Median), "", "", "", "");
        parts.Add("  of which the router (projection, BN, retrieval, softmax)", Table.Format(routerForward.Median), "", "", "", "");
        Console.WriteLine();
        parts.Print();

        double tokens = (double)batch * SequenceLength;
        var table = new Table("LM training step", "min ms", "median ms", "max ms", "tokens/s (median)");
        foreach (var (_, _, samples) in variants)
            table.Add(samples.Name, Table.Format(samples.Min), Table.Format(samples.Median), Table.Format(samples.Max),
                Table.Format(tokens / (samples.Median / 1e3)));
        Console.WriteLine();
        table.Print();
        double peerMedian = variants[0].Samples.Median, denseMedian = variants[1].Samples.Median, bf16Median = variants[2].Samples.Median;
        Console.WriteLine($"PEER LM / dense LM step time: {Table.Format(peerMedian / denseMedian)}; with bf16 tables: " +
                          $"{Table.Format(bf16Median / denseMedian)}");
        Console.WriteLine();

        long Parameters(LanguageModelTrainingLoop t) => t.Model.parameters().Sum(p => p.numel());
        return new JsonObject
        {
            ["configuration"] = new JsonObject
            {
                ["dimension"] = d,
                ["layers"] = Layers,
                ["attention_heads"] = AttentionHeads,
                ["vocabulary"] = Vocabulary,
                ["batch"] = batch,
                ["sequence_length"] = SequenceLength,
                ["tokens_per_step"] = tokens,
                ["peer_block"] = Layers / 2,
                ["peer_experts"] = settings.Experts,
                ["peer_heads"] = settings.Heads,
                ["peer_top_k"] = settings.TopK,
                ["peer_key_dimension"] = settings.KeyDimension,
                ["peer_kernels"] = peerKernels.ToString(),
                ["sparse_gradients"] = true,
                ["dense_ffw_hidden_all_blocks"] = hidden,
                ["timed_steps"] = settings.Steps,
                ["note"] = "both models use dense FFW hidden h*k in every non-PEER block (one width per model in LanguageModelOptions), so they differ only in the PEER block vs a dense FFW of hidden h*k; LanguageModelTrainingLoop defaults (AdamW, clip 1.0); random tokens",
            },
            ["peer_step_ms"] = variants[0].Samples.ToJson(),
            ["dense_step_ms"] = variants[1].Samples.ToJson(),
            ["peer_tokens_per_s"] = Json.Round(tokens / (peerMedian / 1e3)),
            ["dense_tokens_per_s"] = Json.Round(tokens / (denseMedian / 1e3)),
            ["peer_over_dense_step_time"] = Json.Round(peerMedian / denseMedian),
            ["peer_bf16_step_ms"] = variants[2].Samples.ToJson(),
            ["peer_bf16_over_dense_step_time"] = Json.Round(bf16Median / denseMedian),
            ["peer_parameters"] = Parameters(peer),
            ["dense_parameters"] = Parameters(dense),
            ["breakdown_ms"] = new JsonObject
            {
                ["peer_forward_loss"] = pf.ToJson(),
                ["peer_forward_loss_backward"] = pfb.ToJson(),
                ["dense_forward_loss"] = df.ToJson(),
                ["dense_forward_loss_backward"] = dfb.ToJson(),
                ["peer_bf16_forward_loss"] = bf.ToJson(),
                ["peer_bf16_forward_loss_backward"] = bfb.ToJson(),
                ["peer_layer_forward_no_grad"] = layerForward.ToJson(),
                ["peer_router_forward_no_grad"] = routerForward.ToJson(),
                ["counting"] = "backward = median(forward+loss+backward) - median(forward+loss); clip + optimizers = median(step) - "
                    + "median(forward+loss+backward); the PEER layer alone on a random [batch*128, d] input in training mode, no grad",
            },
        };
    }
}
