using System.Globalization;

namespace Microsoft.ML.Peer.Examples;

/// <summary>
/// The examples' command line: <c>--name value</c> options and <c>--flag</c> switches, each declared with its help
/// text, so a wrong or unknown option gets a message that names it and the usage.
/// </summary>
public sealed class ExampleArguments
{
    private readonly string _usage;
    private readonly Dictionary<string, string?> _values = new(StringComparer.OrdinalIgnoreCase);

    private ExampleArguments(string usage) => _usage = usage;

    /// <summary>Parses <paramref name="args"/>; null (after printing why, or the help) when the program should exit.</summary>
    /// <param name="args">The program's arguments.</param>
    /// <param name="usage">The first usage line (the command).</param>
    /// <param name="options">Value options: name → help.</param>
    /// <param name="flags">Switches: name → help.</param>
    public static ExampleArguments? Parse(string[] args, string usage, IReadOnlyDictionary<string, string> options,
        IReadOnlyDictionary<string, string>? flags = null)
    {
        flags ??= new Dictionary<string, string>();
        string help = usage + Environment.NewLine + string.Join(Environment.NewLine,
            options.Select(o => $"  --{o.Key,-22}{o.Value}").Concat(flags.Select(f => $"  --{f.Key,-22}{f.Value}")));
        var parsed = new ExampleArguments(help);
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] is "-h" or "--help") { Console.WriteLine(help); return null; }
            string name = args[i].StartsWith("--", StringComparison.Ordinal) ? args[i][2..] : "";
            if (flags.ContainsKey(name)) { parsed._values[name] = null; continue; }
            if (!options.ContainsKey(name)) return parsed.Fail($"Unknown option '{args[i]}'.");
            if (i + 1 >= args.Length) return parsed.Fail($"--{name} needs a value.");
            parsed._values[name] = args[++i];
        }
        return parsed;
    }

    public bool Flag(string name) => _values.ContainsKey(name);

    public string Text(string name, string fallback) => _values.TryGetValue(name, out var v) && v is not null ? v : fallback;

    /// <summary>A number option; throws <see cref="FormatException"/> naming the option when it is not one.</summary>
    public double Number(string name, double fallback)
    {
        if (!_values.TryGetValue(name, out var text) || text is null) return fallback;
        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value)
            ? value
            : throw new FormatException($"--{name} expects a number; got '{text}'.{Environment.NewLine}{_usage}");
    }

    public int Integer(string name, int fallback)
    {
        double value = Number(name, fallback);
        return value == Math.Floor(value) && value is >= int.MinValue and <= int.MaxValue
            ? (int)value
            : throw new FormatException($"--{name} expects a whole number; got {value}.{Environment.NewLine}{_usage}");
    }

    private ExampleArguments? Fail(string message)
    {
        Console.Error.WriteLine(message);
        Console.Error.WriteLine(_usage);
        return null;
    }
}
