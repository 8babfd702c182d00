using System.Globalization;
using Microsoft.ML.Peer.Models;

/// <summary>Settings of the BrownLanguageModel example, read from --name value pairs.</summary>
internal sealed record CommandLine(double Minutes, int Seed, int Experts, int Dimension, int Layers, int Context, int Batch, int Vocabulary, FeedForwardKind FeedForward, string Prompt, string? Checkpoint, double LearningRate)
{
    private const string Usage = """
        Usage: dotnet run -c Release --project examples/BrownLanguageModel -- [options]
          --minutes <m>        time budget for the whole run (default 5)
          --ffn <kind>         Peer (default), Dense, MoE or ProductKeyMemory
          --experts <N>        experts N = n² of the PEER layer (default 1048576 = 1024², the paper's)
          --dim <d>            model width, a multiple of 64 (default 256)
          --layers <L>         transformer blocks (default 4); PEER replaces the FFN of the middle one
          --context <T>        sequence length (default 128)
          --batch <B>          sequences per step (default 8)
          --vocab <V>          compact cl100k vocabulary size (default 8192)
          --seed <s>           seed (default 1)
          --lr <rate>          peak learning rate (default 0.003)
          --prompt <text>      generation prompt (default "The jury said")
          --checkpoint <path>  write checkpoints there, and resume from it if it exists
        """;

    public static CommandLine? Parse(string[] args)
    {
        var values = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] is "-h" or "--help") { Console.WriteLine(Usage); return null; }
            if (!args[i].StartsWith("--", StringComparison.Ordinal) || i + 1 >= args.Length)
                return Fail($"Expected '--option value', got '{args[i]}'.");
            values[args[i][2..]] = args[++i];
        }
        var known = new[] { "minutes", "ffn", "experts", "dim", "layers", "context", "batch", "vocab", "seed", "prompt", "checkpoint", "lr" };
        foreach (var key in values.Keys)
            if (!known.Contains(key, StringComparer.OrdinalIgnoreCase)) return Fail($"Unknown option --{key}.");
        try
        {
            double minutes = Number("minutes", 5.0, double.Parse);
            if (!(minutes > 0)) return Fail("--minutes must be positive.");
            if (!Enum.TryParse<FeedForwardKind>(values.GetValueOrDefault("ffn", "Peer"), ignoreCase: true, out var ffn))
                return Fail($"--ffn must be one of {string.Join(", ", Enum.GetNames<FeedForwardKind>())}; got '{values["ffn"]}'.");
            int dim = Number("dim", 256, int.Parse);
            if (dim <= 0 || dim % 64 != 0) return Fail($"--dim must be a positive multiple of 64; got {dim}.");
            return new CommandLine(minutes, Number("seed", 1, int.Parse), Number("experts", 1024 * 1024, int.Parse), dim,
                Number("layers", 4, int.Parse), Number("context", 128, int.Parse), Number("batch", 8, int.Parse),
                Number("vocab", 8192, int.Parse), ffn, values.GetValueOrDefault("prompt", "The jury said"), values.GetValueOrDefault("checkpoint"), Number("lr", 3e-3, double.Parse));
        }
        catch (FormatException e)
        {
            return Fail(e.Message);
        }

        T Number<T>(string name, T fallback, Func<string, IFormatProvider, T> parse)
        {
            if (!values.TryGetValue(name, out var text)) return fallback;
            try { return parse(text, CultureInfo.InvariantCulture); }
            catch (FormatException) { throw new FormatException($"--{name} expects a number; got '{text}'."); }
        }
    }

    private static CommandLine? Fail(string message)
    {
        Console.Error.WriteLine(message);
        Console.Error.WriteLine(Usage);
        return null;
    }
}
