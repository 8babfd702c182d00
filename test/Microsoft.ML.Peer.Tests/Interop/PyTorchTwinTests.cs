using Microsoft.ML.Peer.Native;
using System.Diagnostics;
using Microsoft.ML.Peer.Interop;
using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Tests.MLNet;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Tests.Interop;

/// <summary>
/// The PyTorch twin (python/peer_twin) against this library: the same safetensors weights and token ids give the same
/// logits within 1e-5 in float32. Runs where Debian's python3-torch is installed (/usr/bin/python3 can import torch);
/// elsewhere each test is inconclusive and says so.
/// </summary>
[TestClass]
public sealed class PyTorchTwinTests
{
    private const double Tolerance = 1e-5;
    private const string Python = "/usr/bin/python3";
    private static readonly Lazy<bool> TorchInstalled = new(() => Run(new[] { "-c", "import torch, numpy" }, 120).ExitCode == 0);

    public TestContext TestContext { get; set; } = null!;

    private static void RequireTorch()
    {
        if (!TorchInstalled.Value) Assert.Inconclusive("skipped: python3-torch is not installed (apt-get install python3-torch)");
    }

    private static string PythonDirectory()
    {
        var root = new DirectoryInfo(AppContext.BaseDirectory);
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "Peer.MLNet.sln"))) root = root.Parent;
        Assert.IsNotNull(root, "the repository root (Peer.MLNet.sln) above the test binaries");
        return Path.Combine(root.FullName, "python");
    }

    private static (int ExitCode, string Output) Run(IEnumerable<string> arguments, int seconds, string executable = Python)
    {
        if (!File.Exists(executable)) return (-1, $"{executable} does not exist");
        var start = new ProcessStartInfo(executable) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in arguments) start.ArgumentList.Add(a);
        start.Environment["PYTHONPATH"] = PythonDirectory();
        start.Environment["OMP_NUM_THREADS"] = "1";
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(seconds * 1000)) { process.Kill(true); Assert.Fail($"python did not finish in {seconds} s"); }
        return (process.ExitCode, stdout + stderr.Result);
    }

    /// <summary>The twin's logits for <paramref name="tokens"/> with the model exported to <paramref name="modelPath"/>.</summary>
    private static Tensor TwinLogits(string modelPath, Tensor tokens)
    {
        string tokensPath = SafetensorsFiles.TemporaryPath("tokens"), outPath = SafetensorsFiles.TemporaryPath("logits");
        try
        {
            using (var stream = File.Create(tokensPath))
                SafetensorsFile.Write(stream, new Dictionary<string, string>(), new[] { ("tokens", tokens) });
            var (code, output) = Run(new[] { "-m", "peer_twin", "logits", modelPath, tokensPath, outPath }, 300);
            Assert.AreEqual(0, code, $"the twin failed: {output}");
            using var stream2 = File.OpenRead(outPath);
            var (_, entries, dataStart) = SafetensorsFile.ReadHeader(stream2, stream2.Length);
            var entry = entries.Single(e => e.Name == "logits");
            var logits = empty(entry.Shape, ScalarType.Float32);
            SafetensorsFile.ReadData(stream2, dataStart, entry, logits);
            return logits;
        }
        finally
        {
            File.Delete(tokensPath);
            File.Delete(outPath);
        }
    }

    private double CompareWithTwin(nn.Module<Tensor, Tensor> model, string path, Tensor tokens, string what)
    {
        using var noGrad = no_grad();
        var ours = model.forward(tokens);
        var twin = TwinLogits(path, tokens);
        CollectionAssert.AreEqual(ours.shape, twin.shape, $"{what}: logit shapes");
        double delta = (ours - twin).abs().max().item<float>();
        double scale = ours.abs().max().item<float>();
        TestContext.WriteLine($"{what}: max |Δlogit| = {delta:E2} (max |logit| {scale:F2})");
        Assert.IsTrue(scale > 0.5, $"{what}: the logits are not trivially small ({scale})");
        Assert.IsTrue(delta <= Tolerance, $"{what}: max |Δlogit| = {delta:E3} > {Tolerance:E0}");
        return delta;
    }

    public static IEnumerable<object[]> LanguageModels => new[]
    {
        new object[] { "Dense" }, new object[] { "MoE" }, new object[] { "ProductKeyMemory" }, new object[] { "Peer" },
        new object[] { "PeerWhitenedNormalizedInputBN" }, new object[] { "PeerSigmoidRelu" }, new object[] { "PeerBFloat16" },
    };

    [TestMethod]
    [DynamicData(nameof(LanguageModels))]
    public void TwinReproducesLanguageModelLogits(string variant)
    {
        RequireTorch();
        using var model = new TransformerLanguageModel(SafetensorsTests.LanguageModelVariant(variant));
        SafetensorsFiles.Randomize(model, seed: 21);
        model.eval();
        string path = SafetensorsFiles.TemporaryPath("twin-lm");
        try
        {
            PeerSafetensors.Save(model, path);
            using var scope = NewDisposeScope();
            CompareWithTwin(model, path, tensor(SafetensorsFiles.Tokens(8, 16, Training.TinyLanguageModels.Vocabulary, seed: 5)),
                $"LM {variant}");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    [DataRow("PeerBlocks")]
    [DataRow("PeerNoBlocks")]
    [DataRow("PkmBlocks")]
    [DataRow("PkmNoBlocks")]
    public void TwinReproducesTextClassifierLogits(string variant)
    {
        RequireTorch();
        var options = SafetensorsTests.ClassifierVariant(variant);
        using var model = new TransformerTextClassifier(options);
        SafetensorsFiles.Randomize(model, seed: 22);
        model.eval();
        string path = SafetensorsFiles.TemporaryPath("twin-tc");
        try
        {
            PeerSafetensors.Save(model, path);
            using var scope = NewDisposeScope();
            CompareWithTwin(model, path,
                tensor(SafetensorsFiles.Tokens(12, 16, options.VocabularySize, seed: 6, padding: options.PaddingId)),
                $"classifier {variant}");
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>
    /// Retrieval ties: sub-keys triplicated so that groups of experts larger than k score exactly alike. Peer.Native keeps
    /// the smaller expert index among equal scores, and the twin must too, or it would mix other experts' outputs.
    /// </summary>
    [TestMethod]
    public void TwinBreaksRetrievalTiesAsTheNativeKernel()
    {
        RequireTorch();
        var options = SafetensorsTests.LanguageModelVariant("Peer");
        options.Peer.Kernels = PeerKernels.Native;
        if (!Microsoft.ML.Peer.Native.PeerNativeLibrary.IsAvailable)
            Assert.Inconclusive("skipped: the native kernels (Peer.Native), whose tie rule the twin follows, are not available here");
        using var model = new TransformerLanguageModel(options);
        SafetensorsFiles.Randomize(model, seed: 23);
        var peer = (PeerLayer)model.Blocks[1].FeedForward;
        using (no_grad())
        {
            // Each half's sub-keys come in identical groups of three: a query's best sub-key has two exact twins in each half,
            // so its best 3 × 3 = 9 keys score exactly alike and the tie rule alone picks which k = 4 of them are retrieved.
            var keys = peer.Router.Retriever.SubKeys;
            for (int i = 0; i < keys.shape[1]; i++)
                if (i % 3 != 0) keys[TensorIndex.Colon, i].copy_(keys[TensorIndex.Colon, i - i % 3]);
        }
        model.eval();
        string path = SafetensorsFiles.TemporaryPath("twin-ties");
        try
        {
            PeerSafetensors.Save(model, path);
            using var scope = NewDisposeScope();
            var tokens = tensor(SafetensorsFiles.Tokens(8, 16, Training.TinyLanguageModels.Vocabulary, seed: 7));
            // The tied experts hold other random weights: a twin that kept the later of equal keys would mix other experts
            // and miss by far more than the tolerance (checked by reversing the twin's rule: max |Δlogit| then exceeds 0.1).
            CompareWithTwin(model, path, tokens, "LM with tied sub-keys");
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>The issue's acceptance check: a language model trained by ml.Peer().LanguageModel, exported, loaded by the twin.</summary>
    [TestMethod]
    public void TwinReproducesATrainedLanguageModel()
    {
        RequireTorch();
        var ml = new MLContext(seed: 1);
        var options = PluginTestData.TinyLanguageModel();
        options.Epochs = 3;
        using var trained = ml.Peer().LanguageModel(options).Fit(ml.Data.LoadFromEnumerable(PluginTestData.Sentences(200, seed: 1)));
        string path = SafetensorsFiles.TemporaryPath("twin-trained");
        try
        {
            trained.ExportSafetensors(path);
            var ids = PluginTestData.Sentences(8, seed: 3).Select(r => trained.Tokenizer.Encode(r.Text!)).ToList();
            int time = Math.Min(ids.Max(i => i.Length) + 1, trained.ModelOptions.ContextLength);
            var batch = new long[ids.Count, time];
            for (int b = 0; b < ids.Count; b++)
                for (int t = 0; t < time; t++)
                    batch[b, t] = t == 0
                        ? trained.Tokenizer.EndOfTextId
                        : t - 1 < ids[b].Length ? ids[b][t - 1] : trained.Tokenizer.EndOfTextId;
            using var scope = NewDisposeScope();
            CompareWithTwin(trained.Model, path, tensor(batch), "trained LM");
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static void WriteTokens(string path, IReadOnlyList<int> tokens)
    {
        using var scope = NewDisposeScope();
        using var stream = File.Create(path);
        SafetensorsFile.Write(stream, new Dictionary<string, string>(),
            new[] { ("tokens", tensor(tokens.Select(t => (long)t).ToArray())) });
    }

    private static List<int> Stream(Microsoft.ML.Peer.Data.CompactTokenizer tokenizer, IEnumerable<PluginTestData.TextRow> rows)
    {
        var tokens = new List<int>();
        foreach (var row in rows)
        {
            tokens.AddRange(tokenizer.Encode(row.Text!));
            tokens.Add(tokenizer.EndOfTextId);
        }
        return tokens;
    }

    /// <summary>
    /// Issue 15's scale-out path on this machine: a language model trained by ml.Peer().LanguageModel is exported, trained
    /// further by torchrun over 2 gloo processes with its expert tables sharded row-wise, one rank killed (SIGKILL) at
    /// step 120 and the group resumed from the checkpoint of step 100; the loss falls, and the exported result, imported
    /// into ML.NET, has the twin's perplexity within 1e-4 (relative) and saves in an ML.NET zip.
    /// </summary>
    [TestMethod]
    public void TorchrunTrainsShardedAndMLNetScoresTheResult()
    {
        RequireTorch();
        const string Torchrun = "/usr/bin/torchrun";
        if (!File.Exists(Torchrun)) Assert.Inconclusive($"skipped: {Torchrun} is not installed (apt-get install python3-torch)");
        var ml = new MLContext(seed: 1);
        var options = PluginTestData.TinyLanguageModel();
        options.Epochs = 2;
        using var trained = ml.Peer().LanguageModel(options).Fit(ml.Data.LoadFromEnumerable(PluginTestData.Sentences(200, seed: 1)));
        string folder = Path.Combine(Path.GetTempPath(), $"peer-torchrun-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        try
        {
            string Input(string name) => Path.Combine(folder, name);
            trained.ExportSafetensors(Input("lm.safetensors"));
            WriteTokens(Input("train.safetensors"), Stream(trained.Tokenizer, PluginTestData.Sentences(400, seed: 1)));
            var evalTokens = Stream(trained.Tokenizer, PluginTestData.Sentences(60, seed: 8));
            WriteTokens(Input("eval.safetensors"), evalTokens);
            var (code, output) = Run(new[]
            {
                "--standalone", "--nproc_per_node=2", "--redirects", "1", "--tee", "1", "--max_restarts", "1", "-m",
                "peer_twin.train_sharded",
                "--model", Input("lm.safetensors"), "--tokens", Input("train.safetensors"), "--eval-tokens", Input("eval.safetensors"),
                "--out", Input("trained.safetensors"), "--checkpoints", Input("checkpoints"), "--report", Input("report.json"),
                "--steps", "200", "--checkpoint-every", "50", "--fail-at-step", "120", "--batch", "16",
            }, 600, Torchrun);
            Assert.AreEqual(0, code, $"torchrun failed: {output}");
            var report = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Input("report.json")))!;
            var losses = report["losses"]!.AsArray().Select(l => (double)l!).ToList();
            TestContext.WriteLine($"2 ranks: loss {losses.Take(20).Average():F3} → {losses.TakeLast(20).Average():F3}, {(double)report["mean_step_seconds"]! * 1000:F1} ms/step, restarts {report["restarts"]}, resumed from step {report["resumed_from_step"]}, twin perplexity {(double)report["eval_perplexity"]!:F4}");
            Assert.AreEqual(200, losses.Count);
            Assert.AreEqual(1, (int)report["restarts"]!, "the killed rank made torchrun restart the group once");
            Assert.AreEqual(100, (int)report["resumed_from_step"]!, "the group resumed from the last checkpoint before the kill");
            Assert.IsTrue(losses.TakeLast(20).Average() < 0.9 * losses.Take(20).Average(), "the loss falls");

            using var imported = ml.Peer().LanguageModelFromSafetensors(Input("trained.safetensors"), trained.Tokenizer);
            double twin = (double)report["eval_perplexity"]!,
                ours = Perplexity(imported.Model, evalTokens, imported.ModelOptions.ContextLength);
            TestContext.WriteLine($"ML.NET perplexity {ours:F6}, twin {twin:F6}, relative difference {Math.Abs(ours - twin) / twin:E2}");
            Assert.AreEqual(twin, ours, 1e-4 * twin, "the exported model's perplexity in ML.NET and in the twin");
            Assert.AreEqual((long)report["eval_tokens"]!,
                (evalTokens.Count - 1) / imported.ModelOptions.ContextLength * imported.ModelOptions.ContextLength);
            var texts = ml.Data.LoadFromEnumerable(PluginTestData.Sentences(5, seed: 3));
            Assert.IsTrue(PluginTestData.Floats(imported.Transform(texts), "Perplexity").All(float.IsFinite));
            ml.Model.Save(imported, texts.Schema, Input("trained.mlnet"));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>As the twin computes it: exp of the mean cross-entropy over consecutive windows of the context length.</summary>
    private static double Perplexity(TransformerLanguageModel model, IReadOnlyList<int> tokens, int context)
    {
        int windows = (tokens.Count - 1) / context;
        double total = 0;
        using var noGrad = no_grad();
        for (int start = 0; start < windows; start += 16)
        {
            using var scope = NewDisposeScope();
            int count = Math.Min(16, windows - start);
            var inputs = new long[count * context];
            var targets = new long[count * context];
            for (int i = 0; i < count * context; i++)
            {
                inputs[i] = tokens[start * context + i];
                targets[i] = tokens[start * context + i + 1];
            }
            var logits = model.forward(tensor(inputs, new long[] { count, context }));
            total += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), tensor(targets), reduction: nn.Reduction.Sum)
                .to(ScalarType.Float64).item<double>();
        }
        return Math.Exp(total / (windows * context));
    }

    /// <summary>The twin's own unit tests (python/tests): exact product-key top-k against brute force, ties included; safetensors round
    /// trip.</summary>
    [TestMethod]
    public void TwinUnitTestsPass()
    {
        RequireTorch();
        var (code, output) =
            Run(new[] { "-m", "unittest", "discover", "-s", Path.Combine(PythonDirectory(), "tests"), "-t", PythonDirectory() }, 300);
        TestContext.WriteLine(output);
        Assert.AreEqual(0, code, output);
        StringAssert.Contains(output, "OK");
    }
}
