using System.Globalization;
using System.Reflection;
using Microsoft.ML.Peer;

namespace ClassifierBenchmarks;

/// <summary>
/// A named set of changes to <see cref="PeerTextClassificationTrainer.Options"/>' defaults, written "Field=Value,Field=Value"
/// ("defaults" for none), for comparing candidate defaults by cross-validation.
/// </summary>
public sealed record PeerConfiguration(string Name, IReadOnlyList<(FieldInfo Field, object? Value)> Changes)
{
    public static PeerConfiguration Parse(string text)
    {
        var changes = new List<(FieldInfo, object?)>();
        if (text.Trim() != "defaults")
        {
            foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                var pair = part.Split('=', 2, StringSplitOptions.TrimEntries);
                var field = typeof(PeerTextClassificationTrainer.Options).GetField(pair[0], BindingFlags.Public | BindingFlags.Instance)
                    ?? throw new ArgumentException($"'{pair[0]}' is not a field of PeerTextClassificationTrainer.Options.");
                if (pair.Length != 2) throw new ArgumentException($"'{part}' has no value: write {pair[0]}=value.");
                var type = Nullable.GetUnderlyingType(field.FieldType) ?? field.FieldType;
                object? value = pair[1] == "null" ? null
                    : type.IsEnum ? Enum.Parse(type, pair[1])
                    : type == typeof(TimeSpan) ? TimeSpan.FromSeconds(double.Parse(pair[1], CultureInfo.InvariantCulture))
                    : Convert.ChangeType(pair[1], type, CultureInfo.InvariantCulture);
                changes.Add((field, value));
            }
        }
        return new PeerConfiguration(text.Trim(), changes);
    }

    /// <summary>The trainer's options with these changes.</summary>
    public PeerTextClassificationTrainer.Options Options()
    {
        var options = ClassifierSuite.PeerDefaults();
        foreach (var (field, value) in Changes) field.SetValue(options, value);
        return options;
    }
}
