using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.Peer.Interop;
using Microsoft.ML.Peer.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer;

/// <summary>
/// The models of this library as <c>safetensors</c> files, the format PyTorch and Hugging Face use for weights: every
/// tensor of the model's <c>state_dict()</c> under its PyTorch-style name (<c>blocks.1.feed_forward.expert_down.weight</c>,
/// BN running statistics included), float32, and the model's options as JSON in the header's <c>__metadata__</c>
/// (<see cref="ConfigKey"/>). The twin in <c>python/peer_twin</c> reads and writes the same files, so a model trained in
/// PyTorch is scored in ML.NET and the other way round (docs/interop.md). Written by the format's specification in C#
/// (no extra dependency). Loading checks the file as the ML.NET model loader checks its streams: the header, the options
/// and the number of values the options describe are validated before the model is built, so a file cannot make loading
/// allocate more than it holds; every failure is an <see cref="InvalidDataException"/> naming the file and the tensor or
/// field.
/// </summary>
public static class PeerSafetensors
{
    /// <summary>The metadata key of the model's options (JSON, enums as names).</summary>
    public const string ConfigKey = "peer.config";

    /// <summary>The metadata key of the model's kind: <see cref="LanguageModelKind"/> or <see cref="TextClassifierKind"/>.</summary>
    public const string ModelKey = "peer.model";

    /// <summary>The metadata key of the export format version (<see cref="FormatVersion"/>).</summary>
    public const string FormatVersionKey = "peer.format_version";

    /// <summary>The value of <see cref="ModelKey"/> for a <see cref="TransformerLanguageModel"/>.</summary>
    public const string LanguageModelKind = "language_model";

    /// <summary>The value of <see cref="ModelKey"/> for a <see cref="TransformerTextClassifier"/>.</summary>
    public const string TextClassifierKind = "text_classifier";

    /// <summary>The export format this version writes and reads.</summary>
    public const int FormatVersion = 1;

    internal const string WriterKey = "peer.writer";
    internal const string LabelKeyValuesKey = "peer.label_key_values";
    internal const string TruncationKey = "peer.truncation";

    /// <summary>The metadata key of an ensemble's model count (absent: one model); its models' tensors are named
    /// <c>members.{m}.</c> + the one model's names.</summary>
    internal const string EnsembleSizeKey = "peer.ensemble_size";

    /// <summary>The metadata key of an ensemble's score temperatures, one per model (JSON array of numbers); the rest of each model's
    /// options are <see cref="ConfigKey"/>'s.</summary>
    internal const string ScoreTemperaturesKey = "peer.score_temperatures";

    /// <summary>The prefix of model <paramref name="member"/>'s tensors in a file of <paramref name="count"/> models.</summary>
    internal static string MemberPrefix(int member, int count) => count > 1 ? $"members.{member}." : "";

    internal static readonly JsonSerializerOptions ConfigJson = new()
    {
        Converters = { new JsonStringEnumConverter() },
    };

    /// <summary>Writes <paramref name="model"/> to <paramref name="path"/> (replaced only once the new file is complete).</summary>
    public static void Save(TransformerLanguageModel model, string path)
    {
        ArgumentNullException.ThrowIfNull(model);
        Write(path, model, model.Options, LanguageModelKind, null);
    }

    /// <summary>Writes <paramref name="model"/> to <paramref name="path"/> (replaced only once the new file is complete).</summary>
    public static void Save(TransformerTextClassifier model, string path)
    {
        ArgumentNullException.ThrowIfNull(model);
        Write(path, model, model.Options, TextClassifierKind, null);
    }

    /// <summary>A language model built from the options and filled with the weights of the safetensors file at
    /// <paramref name="path"/>.</summary>
    public static TransformerLanguageModel LoadLanguageModel(string path) =>
        Read(path, LanguageModelKind, (LanguageModelOptions o) => { o.Validate(); return o; }, o => new TransformerLanguageModel(o)).Model;

    /// <summary>
    /// The reading of the models of a file, for a file of one model only: an ensemble's file is refused, naming how many it holds.
    /// </summary>
    internal static (TModel Model, TOptions Options, IReadOnlyDictionary<string, string> Metadata) Read<TOptions, TModel>(
        string path, string kind, Func<TOptions, TOptions> validate, Func<TOptions, TModel> create)
        where TOptions : TransformerOptions
        where TModel : nn.Module
    {
        var (models, options, metadata) = Read(path, kind, validate, create, (o, m) => OneModel(o, m, path));
        return (models[0], options, metadata);
    }

    private static IReadOnlyList<TOptions> OneModel<TOptions>(TOptions options, IReadOnlyDictionary<string, string> metadata, string path)
    {
        if (metadata.TryGetValue(EnsembleSizeKey, out var size))
            throw new InvalidDataException($"The safetensors file '{path}' holds an ensemble of {SafetensorsFile.Printable(size)} models ('{EnsembleSizeKey}'), not one model: read it with TextClassifierFromSafetensors.");
        return new[] { options };
    }

    /// <summary>
    /// The options of each model of a classifier file: <paramref name="options"/> alone, or for an ensemble
    /// (<see cref="EnsembleSizeKey"/>) a copy per model with its temperature from <see cref="ScoreTemperaturesKey"/>.
    /// </summary>
    internal static IReadOnlyList<TextClassifierOptions> ClassifierMembers(TextClassifierOptions options, IReadOnlyDictionary<string, string> metadata,
        string path)
    {
        if (!metadata.TryGetValue(EnsembleSizeKey, out var size)) return new[] { options };
        if (!int.TryParse(size, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int count) ||
            count < 2 || count > ModelLimits.EnsembleSize)
            throw new InvalidDataException($"The safetensors file '{path}' has '{EnsembleSizeKey}' '{SafetensorsFile.Printable(size)}'; an ensemble has 2 to {ModelLimits.EnsembleSize} models.");
        var temperatures = metadata.TryGetValue(ScoreTemperaturesKey, out var json) ? NumbersOrNull(json) : null;
        if (temperatures is null || temperatures.Length != count || temperatures.Any(t => !(t > 0) || !double.IsFinite(t)))
            throw new InvalidDataException($"The safetensors file '{path}' holds an ensemble of {count} models but its '{ScoreTemperaturesKey}' metadata is not {count} positive finite numbers.");
        return temperatures.Select(t =>
        {
            var member = options.Clone();
            member.ScoreTemperature = t;
            return member;
        }).ToArray();
    }

    /// <summary>A text classifier built from the options and filled with the weights of the safetensors file at
    /// <paramref name="path"/>.</summary>
    public static TransformerTextClassifier LoadTextClassifier(string path) =>
        Read(path, TextClassifierKind, (TextClassifierOptions o) => { o.Validate(); return o; },
            o => new TransformerTextClassifier(o)).Model;

    private static double[]? NumbersOrNull(string json)
    {
        try
        {
            return JsonSerializer.Deserialize<double[]>(json);
        }
        catch (JsonException)
        {
            return null;   // refused by the caller, with the key named
        }
    }

    internal static void Write(string path, nn.Module model, TransformerOptions options, string kind,
        IEnumerable<KeyValuePair<string, string>>? extra) => Write(path, new[] { model }, options, kind, extra);

    /// <summary>
    /// Writes every tensor of each of <paramref name="models"/>' state dictionaries, in their order (with
    /// <see cref="MemberPrefix"/> before the names where there are several), and the metadata: the format, the kind, the
    /// options and whatever <paramref name="extra"/> adds. A temporary file beside <paramref name="path"/> is renamed over it
    /// once complete.
    /// </summary>
    internal static void Write(string path, IReadOnlyList<nn.Module> models, TransformerOptions options, string kind,
        IEnumerable<KeyValuePair<string, string>>? extra)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        foreach (var model in models) Training.FiniteWeights.Ensure(model, "at export");
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["format"] = "pt",    // what Hugging Face loaders look for in a PyTorch-layout file
            [FormatVersionKey] = FormatVersion.ToString(System.Globalization.CultureInfo.InvariantCulture),
            [ModelKey] = kind,
            [WriterKey] = $"Microsoft.ML.Peer {PeerModelPersistence.ProductVersion}",
            [ConfigKey] = JsonSerializer.Serialize(options, options.GetType(), ConfigJson),
        };
        foreach (var (key, value) in extra ?? Array.Empty<KeyValuePair<string, string>>()) metadata[key] = value;
        string full = Path.GetFullPath(path);
        string temporary = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                var tensors = models.SelectMany((model, m) => model.state_dict().Select(p => (MemberPrefix(m, models.Count) + p.Key, p.Value)));
                SafetensorsFile.Write(stream, metadata, tensors.ToList());
                stream.Flush(flushToDisk: true);
            }
            File.Move(temporary, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temporary); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    /// <summary>
    /// Reads the models of <paramref name="kind"/> in a file: header, metadata, options (checked by <paramref name="validate"/>),
    /// each model's options from them and the metadata (<paramref name="members"/>, which refuses what does not fit), the number
    /// of values against those options, then each model <paramref name="create"/> builds, its tensors compared by name, type
    /// and shape with the file's, filled and checked for NaN or infinity.
    /// </summary>
    internal static (IReadOnlyList<TModel> Models, TOptions Options, IReadOnlyDictionary<string, string> Metadata) Read<TOptions, TModel>(
        string path, string kind, Func<TOptions, TOptions> validate, Func<TOptions, TModel> create,
        Func<TOptions, IReadOnlyDictionary<string, string>, IReadOnlyList<TOptions>> members)
        where TOptions : TransformerOptions
        where TModel : nn.Module
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        Native.TorchSharpRuntime.EnsureLoadable();
        string what = $"The safetensors file '{path}'";
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        Dictionary<string, string> metadata;
        List<SafetensorsEntry> entries;
        long dataStart;
        try
        {
            (metadata, entries, dataStart) = SafetensorsFile.ReadHeader(stream, stream.Length);
        }
        catch (Exception e) when (e is EndOfStreamException or IOException && e is not FileNotFoundException)
        {
            throw new InvalidDataException($"{what} is truncated: {e.Message}", e);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"{what} is not a valid safetensors file: {e.Message}", e);
        }

        if (!metadata.TryGetValue(ModelKey, out var savedKind) || !metadata.TryGetValue(ConfigKey, out var config))
            throw new InvalidDataException($"{what} has no '{ModelKey}' and '{ConfigKey}' metadata: it was not exported by Microsoft.ML.Peer or its PyTorch twin (python/peer_twin), so the model's shape is unknown.");
        if (metadata.TryGetValue(FormatVersionKey, out var version) &&
            version != FormatVersion.ToString(System.Globalization.CultureInfo.InvariantCulture))
            throw new InvalidDataException($"{what} has export format version '{SafetensorsFile.Printable(version)}'; this Microsoft.ML.Peer ({PeerModelPersistence.ProductVersion}) reads version {FormatVersion}.");
        if (savedKind != kind)
            throw new InvalidDataException($"{what} holds a '{SafetensorsFile.Printable(savedKind)}' model, not a '{kind}'.");

        TOptions options;
        try
        {
            options = validate(JsonSerializer.Deserialize<TOptions>(config, ConfigJson)
                ?? throw new InvalidDataException($"its '{ConfigKey}' metadata is null."));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{what} has invalid '{ConfigKey}' metadata: {e.Message}", e);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{what} has an invalid {e.ParamName} in its '{ConfigKey}' metadata: {e.Message}", e);
        }

        var memberOptions = members(options, metadata);
        long expected = memberOptions.Sum(FlopCounter.StateElements);
        long saved = entries.Sum(e => e.Elements);
        if (saved != expected)
            throw new InvalidDataException($"{what} holds {saved:N0} values but the model{(memberOptions.Count > 1 ? "s" : "")} its '{ConfigKey}' describes {(memberOptions.Count > 1 ? "have" : "has")} {expected:N0}: the options or the weights do not belong together.");

        var lookup = entries.ToDictionary(e => e.Name, StringComparer.Ordinal);   // names are unique (checked with the header)
        var byName = new Dictionary<string, SafetensorsEntry>(lookup, StringComparer.Ordinal);
        var models = new List<TModel>();
        try
        {
            using var noGrad = no_grad();
            for (int m = 0; m < memberOptions.Count; m++)
            {
                var model = create(memberOptions[m]);
                models.Add(model);
                string prefix = MemberPrefix(m, memberOptions.Count);
                foreach (var (own, tensor) in model.state_dict())
                {
                    string name = prefix + own;
                    if (!byName.Remove(name, out var entry))
                        throw new InvalidDataException($"{what} has no tensor '{name}', which the model its '{ConfigKey}' describes needs.");
                    if (entry.Type != tensor.dtype || !entry.Shape.SequenceEqual(tensor.shape))
                        throw new InvalidDataException($"{what} holds tensor '{name}' as {entry.Describe()}; the model its '{ConfigKey}' describes needs {SafetensorsFile.DTypeOf(tensor.dtype)} [{string.Join(", ", tensor.shape)}].");
                }
            }
            if (byName.Count > 0)
                throw new InvalidDataException($"{what} holds tensor '{SafetensorsFile.Printable(byName.Keys.First())}', which the model its '{ConfigKey}' describes does not have.");
            for (int m = 0; m < models.Count; m++)
            {
                string prefix = MemberPrefix(m, models.Count);
                foreach (var (own, tensor) in models[m].state_dict())
                {
                    string name = prefix + own;
                    try
                    {
                        SafetensorsFile.ReadData(stream, dataStart, lookup[name], tensor);
                    }
                    catch (Exception e) when (e is EndOfStreamException or IOException)
                    {
                        throw new InvalidDataException($"{what} is truncated inside tensor '{name}': {e.Message}", e);
                    }
                    catch (InvalidDataException e)
                    {
                        throw new InvalidDataException($"{what} is truncated: {e.Message}", e);
                    }
                }
                if (Training.FiniteWeights.FirstNonFinite(models[m]) is { } bad)
                    throw new InvalidDataException($"{what} holds NaN or infinite values in tensor '{MemberPrefix(m, models.Count)}{bad}'.");
            }
            return (models, options, metadata);
        }
        catch
        {
            foreach (var model in models) model.Dispose();
            throw;
        }
    }
}
