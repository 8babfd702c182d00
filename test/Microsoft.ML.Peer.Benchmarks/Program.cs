using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.ML.Peer.Benchmarks;

// The benchmarks call TorchSharp before any Microsoft.ML.Peer type would prepare it.
Microsoft.ML.Peer.Native.TorchSharpRuntime.EnsureLoadable();
return BenchmarkProgram.Run(args);

namespace Microsoft.ML.Peer.Benchmarks
{
    /// <summary>Command-line entry point: parses the command and options, runs the benchmark, writes the JSON report.</summary>
    internal static class BenchmarkProgram
    {
        public const string Usage = """
            usage: dotnet run -c Release --project test/Microsoft.ML.Peer.Benchmarks -- <command> [options]

            commands:
              peer-layer   one training step of a PEER layer: composed (managed) vs native kernels vs a dense FFW of
                           equal active FLOPs, with a native breakdown, this machine's GEMM rate and memory bandwidth,
                           a FLOP/byte floor and peak memory; then lm-step (unless --no-lm).
                           Writes artifacts/bench/peer-layer.json.
              lm-step      one LanguageModelTrainingLoop.TrainStep of a 4-layer transformer LM with a PEER block vs the same
                           LM with that block's FFW dense of hidden h*k. Writes artifacts/bench/lm-step.json.
              bf16-quality the plugin's PEER language model trained on the Brown corpus from one seed with float32 and with
                           bfloat16 expert tables: validation perplexity curves side by side (default N = 1024²,
                           --steps 600). Writes artifacts/bench/bf16-quality.json.
              retrieval    product-key top-k of T*h queries: the fused native kernel vs torch GEMM scores + the native
                           Cartesian top-k vs the managed path, interleaved. Writes artifacts/bench/retrieval.json.
              scoring      the default PEER spam classifier vs FeaturizeText + SdcaMaximumEntropy on the SpamAssassin test
                           rows: Transform throughput and PredictionEngine latency side by side, and the PEER model's time
                           per row by part. Writes artifacts/bench/scoring.json.

            options:
              --steps N    timed steps per variant after one warm-up step each (default 7; medians want >= 5)
              --tokens T   tokens per layer step (default 2048); for the LM, tokens per batch, in sequences of 128 (default 1024)
              --experts N  experts in the PEER layer, a perfect square (default 1048576)
              --no-lm      peer-layer only: skip the LM step
              --rows N     scoring: rows timed one by one through each PredictionEngine (default 400)
              --sdca-iterations N  scoring: SDCA passes of the stock model (default 10; scoring cost does not depend on it)
              -h, --help   this message
            """;

        public static int Run(string[] args)
        {
            if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
            {
                Console.WriteLine(Usage);
                return args.Length == 0 ? 2 : 0;
            }
            string command = args[0];
            if (command is not ("peer-layer" or "lm-step" or "scoring" or "bf16-quality" or "retrieval"))
                return Fail($"unknown command '{command}'.");
            if (!BenchmarkSettings.TryParse(args.AsSpan(1), command, out var settings, out var error))
                return Fail(error);

            var root = RepositoryRoot.Find();
            var report = new JsonObject { ["command"] = command, ["machine"] = MachineInfo.Describe() };
            if (command == "peer-layer")
            {
                PeerLayerBenchmark.Run(settings, report);
                if (settings.RunLanguageModel)
                    report["lm_step"] = LanguageModelBenchmark.Run(settings);
            }
            else if (command == "retrieval")
            {
                report["retrieval"] = RetrievalBenchmark.Run(settings);
            }
            else if (command == "bf16-quality")
            {
                report["bf16_quality"] = BFloat16QualityBenchmark.Run(settings);
            }
            else if (command == "scoring")
            {
                report["scoring"] = ScoringBenchmark.Run(settings);
            }
            else
            {
                report["lm_step"] = LanguageModelBenchmark.Run(settings);
            }
            // Other processes share this machine: their load before and after qualifies the timings.
            report["machine"]!["load_average_after"] = MachineInfo.LoadAverage();
            var path = Path.Combine(root, "artifacts", "bench", command + ".json");
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(path, report.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
            Console.WriteLine($"wrote {Path.GetRelativePath(Directory.GetCurrentDirectory(), path)}");
            return 0;
        }

        private static int Fail(string message)
        {
            Console.Error.WriteLine($"error: {message}");
            Console.Error.WriteLine();
            Console.Error.WriteLine(Usage);
            return 2;
        }
    }

    /// <summary>Sizes of a run; the defaults are the configuration the report is about.</summary>
    internal sealed class BenchmarkSettings
    {
        public int Steps { get; private set; } = 7;
        public int Tokens { get; private set; } = 2048;
        public bool TokensGiven { get; private set; }
        public int Experts { get; private set; } = 1024 * 1024;
        public bool RunLanguageModel { get; private set; } = true;
        public int LatencyRows { get; private set; } = 400;
        public int SdcaIterations { get; private set; } = 10;
        public int QualitySteps { get; private set; } = 600;

        public int Dimension => 256;
        public int Heads => 8;
        public int TopK => 16;
        public int KeyDimension => 128;

        public static bool TryParse(ReadOnlySpan<string> args, string command, out BenchmarkSettings settings, out string error)
        {
            settings = new BenchmarkSettings();
            error = "";
            for (int i = 0; i < args.Length; i++)
            {
                string option = args[i];
                switch (option)
                {
                    case "--no-lm" when command == "peer-layer":
                        settings.RunLanguageModel = false;
                        break;
                    case "--rows" or "--sdca-iterations" when command == "scoring":
                    case "--steps" or "--tokens" or "--experts":
                        if (i + 1 >= args.Length ||
                            !int.TryParse(args[i + 1], NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) || value <= 0)
                        {
                            error = $"{option} needs a positive integer.";
                            return false;
                        }
                        i++;
                        if (option == "--rows") settings.LatencyRows = value;
                        else if (option == "--sdca-iterations") settings.SdcaIterations = value;
                        else if (option == "--steps") { settings.Steps = value; settings.QualitySteps = value; }
                        else if (option == "--tokens") { settings.Tokens = value; settings.TokensGiven = true; }
                        else
                        {
                            int n = (int)Math.Round(Math.Sqrt(value));
                            if ((long)n * n != value || n < 16)
                            {
                                error = $"--experts must be a perfect square of at least 16² (top-k is 16); got {value}.";
                                return false;
                            }
                            settings.Experts = value;
                        }
                        break;
                    default:
                        error = $"unknown option '{option}' for {command}.";
                        return false;
                }
            }
            if (settings.Steps < 5)
                Console.Error.WriteLine($"note: --steps {settings.Steps} < 5; medians of so few steps are only a smoke test.");
            return true;
        }
    }

    /// <summary>The repository root: the nearest folder up from here holding Peer.MLNet.sln.</summary>
    internal static class RepositoryRoot
    {
        public static string Find()
        {
            foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            {
                for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                    if (File.Exists(Path.Combine(dir.FullName, "Peer.MLNet.sln")))
                        return dir.FullName;
            }
            throw new InvalidOperationException(
                "Peer.MLNet.sln was not found above the working directory or the program's folder; run from inside the repository.");
        }
    }
}
