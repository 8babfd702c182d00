using System.Diagnostics;
using System.Text.Json.Nodes;

namespace Microsoft.ML.Peer.Benchmarks;

/// <summary>
/// The PEER layer step composed in PyTorch (pytorch_peer_step.py: peer_twin's layer, expert rows gathered by
/// nn.Embedding; tables with sparse gradients and SparseAdam, then with dense gradients and AdamW), with this run's
/// sizes and step count, where a Python with torch is installed (Debian's python3-torch; PEER_PYTHON names another).
/// </summary>
internal static class PyTorchReference
{
    public static JsonObject? Run(BenchmarkSettings settings, double? nativeStepMedian)
    {
        string python = Environment.GetEnvironmentVariable("PEER_PYTHON") ?? "/usr/bin/python3";
        // Run from the source tree: it imports the twin from python/peer_twin beside it.
        string script = Path.Combine(RepositoryRoot.Find(), "test", "Microsoft.ML.Peer.Benchmarks", "pytorch_peer_step.py");
        if (!File.Exists(python) || !File.Exists(script) || RunPython(python, "-c", "import torch").ExitCode != 0)
        {
            Console.WriteLine($"PyTorch reference skipped: no torch for {python} (apt install python3-torch, or set PEER_PYTHON).");
            return null;
        }
        var result = new JsonObject();
        var table = new Table("PyTorch step (median)", "total ms", "forward", "backward", "optimizer", "native / PyTorch");
        foreach (bool dense in new[] { false, true })
        {
            var arguments = new List<string>
            {
                script, "--experts", settings.Experts.ToString(), "--dimension", settings.Dimension.ToString(),
                "--heads", settings.Heads.ToString(), "--topk", settings.TopK.ToString(),
                "--key-dimension", settings.KeyDimension.ToString(), "--tokens", settings.Tokens.ToString(),
                "--steps", settings.Steps.ToString(), "--threads", TorchSharp.torch.get_num_threads().ToString(),
            };
            if (dense) arguments.Add("--dense");
            Console.WriteLine($"timing the PyTorch step ({(dense ? "dense" : "sparse")} table gradients) ...");
            var (exitCode, output) = RunPython(python, arguments.ToArray());
            string key = dense ? "dense_adamw" : "sparse_sparseadam";
            if (exitCode != 0)
            {
                Console.WriteLine($"  failed (exit {exitCode}): {output.Trim().Split('\n').LastOrDefault()}");
                result[key] = new JsonObject { ["error"] = output.Length > 2000 ? output[^2000..] : output };
                continue;
            }
            var json = JsonNode.Parse(output.Trim().Split('\n').Last())!.AsObject();
            var median = json["median_ms"]!.AsObject();
            double total = median["total"]!.GetValue<double>();
            json["native_over_pytorch"] = Json.Number(nativeStepMedian / total);
            result[key] = json;
            table.Add((string)json["tables"]!, Table.Format(total), Table.Format(median["forward"]!.GetValue<double>()),
                Table.Format(median["backward"]!.GetValue<double>()), Table.Format(median["optimizer"]!.GetValue<double>()),
                nativeStepMedian is { } n ? Table.Format(n / total) : "n/a");
        }
        table.Print();
        result["counting"] = "median of --steps timed steps after one warm-up, forward + backward + optimizer step, the same "
            + "N, d, h, k, d_key, T and thread count as the .NET variants; run after them in a separate process";
        return result;
    }

    private static (int ExitCode, string Output) RunPython(string python, params string[] arguments)
    {
        var start = new ProcessStartInfo(python) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        using var process = Process.Start(start)!;
        var error = process.StandardError.ReadToEndAsync();
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, output + error.Result);
    }
}
