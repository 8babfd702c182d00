using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Benchmarks;

/// <summary>Timings of one measured quantity, in milliseconds.</summary>
internal sealed class Samples
{
    private readonly List<double> _values = new();

    public Samples(string name) => Name = name;

    public string Name { get; }

    public int Count => _values.Count;

    public IReadOnlyList<double> Values => _values;

    public void Add(double milliseconds) => _values.Add(milliseconds);

    public double Min => _values.Min();

    public double Max => _values.Max();

    public double Median
    {
        get
        {
            var sorted = _values.Order().ToArray();
            int mid = sorted.Length / 2;
            return sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
        }
    }

    public JsonObject ToJson() => new()
    {
        ["min"] = Json.Round(Min),
        ["median"] = Json.Round(Median),
        ["max"] = Json.Round(Max),
        ["samples"] = new JsonArray(_values.Select(v => (JsonNode?)Json.Round(v)).ToArray()),
    };

    public static double Milliseconds(long fromTimestamp, long toTimestamp) =>
        (toTimestamp - fromTimestamp) * 1000.0 / Stopwatch.Frequency;
}

internal static class Json
{
    public static double Round(double value) => Math.Round(value, 4);

    public static JsonNode? Number(double? value) => value is { } v && double.IsFinite(v) ? JsonValue.Create(Round(v)) : null;
}

/// <summary>Fixed-width text table for the console.</summary>
internal sealed class Table
{
    private readonly string[] _header;
    private readonly List<string[]> _rows = new();

    public Table(params string[] header) => _header = header;

    public void Add(params string[] cells) => _rows.Add(cells);

    public void Add(Samples samples, string unit = "ms") =>
        Add(samples.Name, Format(samples.Min), Format(samples.Median), Format(samples.Max), unit);

    public static string Format(double value) => value.ToString(Math.Abs(value) >= 100 ? "F1" : "F3", CultureInfo.InvariantCulture);

    public void Print()
    {
        var widths = _header.Select((h, i) => Math.Max(h.Length, _rows.Select(r => i < r.Length ? r[i].Length : 0).DefaultIfEmpty(0).Max()))
            .ToArray();
        string Line(string[] cells) => string.Join("  ", cells.Select((c, i) => i == 0 ? c.PadRight(widths[i]) : c.PadLeft(widths[i])));
        Console.WriteLine(Line(_header));
        Console.WriteLine(string.Join("  ", widths.Select(w => new string('-', w))));
        foreach (var row in _rows) Console.WriteLine(Line(row));
        Console.WriteLine();
    }
}

/// <summary>What the numbers were measured on.</summary>
internal static class MachineInfo
{
    public static JsonObject Describe()
    {
        string processor = "unknown";
        if (File.Exists("/proc/cpuinfo"))
            processor = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))
                ?.Split(':', 2)[1].Trim() ?? processor;
        var torchSharp = typeof(torch).Assembly;
        string torchSharpVersion = torchSharp.GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
            .OfType<System.Reflection.AssemblyInformationalVersionAttribute>().FirstOrDefault()?.InformationalVersion
                ?? torchSharp.GetName().Version?.ToString() ?? "unknown";
        return new JsonObject
        {
            ["processor"] = processor,
            ["cores"] = Environment.ProcessorCount,
            ["torch_threads"] = torch.get_num_threads(),
            ["memory_bytes"] = MemoryProbe.TotalMemoryBytes(),
            ["os"] = RuntimeInformation.OSDescription,
            ["dotnet"] = RuntimeInformation.FrameworkDescription,
            ["torchsharp"] = torchSharpVersion.Split('+')[0],
            ["load_average_before"] = LoadAverage(),
            ["date_utc"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
        };
    }

    /// <summary>The 1, 5 and 15 minute load averages (/proc/loadavg), or null off Linux.</summary>
    public static string? LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : null;
}

/// <summary>Resident memory of this process from /proc (Linux).</summary>
internal static class MemoryProbe
{
    /// <summary>Resets VmHWM to the current RSS (clear_refs value 5); false where the kernel does not allow it.</summary>
    public static bool ResetPeak()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    public static long? PeakResidentBytes() => StatusKilobytes("VmHWM:") * 1024;

    /// <summary>Anonymous memory of this process held in transparent huge pages (AnonHugePages of /proc/self/smaps_rollup).</summary>
    public static long? AnonHugePageBytes()
    {
        if (!File.Exists("/proc/self/smaps_rollup")) return null;
        var line = File.ReadLines("/proc/self/smaps_rollup").FirstOrDefault(l => l.StartsWith("AnonHugePages:", StringComparison.Ordinal));
        return line is null
            ? null
            : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
    }

    public static long? ResidentBytes() => StatusKilobytes("VmRSS:") * 1024;

    public static long? TotalMemoryBytes()
    {
        if (!File.Exists("/proc/meminfo")) return null;
        var line = File.ReadLines("/proc/meminfo").FirstOrDefault(l => l.StartsWith("MemTotal:", StringComparison.Ordinal));
        return line is null
            ? null
            : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
    }

    private static long? StatusKilobytes(string key)
    {
        if (!File.Exists("/proc/self/status")) return null;
        var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith(key, StringComparison.Ordinal));
        return line is null ? null : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
    }
}

/// <summary>This machine's fp32 GEMM rate and memory bandwidth through libtorch, measured in the same run as the layer.</summary>
internal sealed class MachineRates
{
    public required Samples Sgemm { get; init; }
    public required Samples Copy { get; init; }
    public required Samples Add { get; init; }
    public required double SgemmGflops { get; init; }
    public required double CopyGbps { get; init; }
    public required double AddGbps { get; init; }

    /// <summary>The better of copy and add: the floor should use the best bandwidth this machine showed.</summary>
    public double StreamGbps => Math.Max(CopyGbps, AddGbps);

    public const int GemmSize = 2048;
    public const long StreamFloats = 512L * 1024 * 1024 / sizeof(float);

    public static MachineRates Measure(int repetitions)
    {
        repetitions = Math.Max(5, repetitions);
        var sgemm = new Samples($"torch.mm {GemmSize}x{GemmSize}");
        var copy = new Samples("copy 512 MiB");
        var add = new Samples("add_ 512 MiB");
        using (var scope = NewDisposeScope())
        {
            var a = randn(GemmSize, GemmSize);
            var b = randn(GemmSize, GemmSize);
            for (int i = 0; i <= repetitions; i++)
            {
                using var step = NewDisposeScope();
                long start = Stopwatch.GetTimestamp();
                var c = a.mm(b);
                long end = Stopwatch.GetTimestamp();
                if (i > 0) sgemm.Add(Samples.Milliseconds(start, end));   // i = 0 warms up
            }
        }
        using (var scope = NewDisposeScope())
        {
            // Filled before timing so page faults are not counted.
            var a = ones(StreamFloats);
            var b = ones(StreamFloats);
            using var noGrad = no_grad();
            for (int i = 0; i <= repetitions; i++)
            {
                long start = Stopwatch.GetTimestamp();
                b.copy_(a);
                long middle = Stopwatch.GetTimestamp();
                a.add_(b);
                long end = Stopwatch.GetTimestamp();
                if (i == 0) continue;
                copy.Add(Samples.Milliseconds(start, middle));
                add.Add(Samples.Milliseconds(middle, end));
            }
        }
        double gemmFlops = 2.0 * GemmSize * GemmSize * GemmSize;
        double arrayBytes = StreamFloats * sizeof(float);
        return new MachineRates
        {
            Sgemm = sgemm,
            Copy = copy,
            Add = add,
            SgemmGflops = gemmFlops / (sgemm.Median / 1000) / 1e9,
            CopyGbps = 2 * arrayBytes / (copy.Median / 1000) / 1e9,
            AddGbps = 3 * arrayBytes / (add.Median / 1000) / 1e9,
        };
    }

    public JsonObject ToJson() => new()
    {
        ["sgemm_gflops"] = Json.Round(SgemmGflops),
        ["sgemm_ms"] = Sgemm.ToJson(),
        ["copy_gbps"] = Json.Round(CopyGbps),
        ["copy_ms"] = Copy.ToJson(),
        ["add_gbps"] = Json.Round(AddGbps),
        ["add_ms"] = Add.ToJson(),
        ["stream_gbps"] = Json.Round(StreamGbps),
        ["counting"] = $"sgemm: 2*{GemmSize}^3 flops per torch.mm of two {GemmSize}x{GemmSize} fp32 matrices / median time. " +
                       "copy (b.copy_(a)): 2 x 512 MiB (read a, write b); add (a.add_(b)): 3 x 512 MiB (read a, b, write a); " +
                       "GB = 1e9 bytes; write-allocate traffic is not counted. stream_gbps is the larger of the two medians' rates.",
    };
}
