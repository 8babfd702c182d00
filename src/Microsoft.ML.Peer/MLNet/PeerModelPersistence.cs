using System.Reflection;
using System.Text.Json;
using Microsoft.ML.Peer.Data;
using TorchSharp;

namespace Microsoft.ML.Peer;

/// <summary>
/// How the PEER transformers live inside an ML.NET model zip: a small header in the transformer's own stream
/// (written through ModelSaveContext), then named binary streams for the options (JSON), the tokenizer and the
/// TorchSharp weights. Every failure to read one is an <see cref="InvalidDataException"/> that names the stream.
/// </summary>
internal static class PeerModelPersistence
{
    public const string OptionsStream = "PeerOptions.json";
    public const string TokenizerStream = "PeerTokenizer.bin";
    public const string WeightsStream = "PeerWeights.bin";

    /// <summary>The assembly's informational version, written beside the format version for error messages.</summary>
    public static string ProductVersion { get; } =
        typeof(PeerModelPersistence).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
        ?? typeof(PeerModelPersistence).Assembly.GetName().Version?.ToString() ?? "unknown";

    /// <summary>The format version every PEER transformer writes (0x00010001), under its own 8-character signature.</summary>
    public static VersionInfo FormatVersion(string modelSignature, string loaderSignature) => new(
        modelSignature: modelSignature,
        verWrittenCur: 0x00010001,
        verReadableCur: 0x00010001,
        verWeCanReadBack: 0x00010001,
        loaderSignature: loaderSignature,
        loaderAssemblyName: typeof(PeerModelPersistence).Assembly.FullName);

    /// <summary>
    /// Checks the saved format version before ML.NET does, so the error names both versions and what to do
    /// (ML.NET's own check only says the model is unsupported).
    /// </summary>
    public static void CheckVersion(ModelLoadContext ctx, VersionInfo ours, string what)
    {
        MLNetVersionCheck.EnsureCompatible();
        Native.TorchSharpRuntime.EnsureLoadable();
        uint written = ctx.Header.ModelVerWritten, readable = ctx.Header.ModelVerReadable;
        if (readable > ours.VerWrittenCur || written < ours.VerWeCanReadBack)
            throw new InvalidDataException(
                $"This {what} was saved in model format version 0x{written:X8} (readable by 0x{readable:X8} and later); " +
                $"this Microsoft.ML.Peer ({ProductVersion}) reads versions 0x{ours.VerWeCanReadBack:X8} to 0x{ours.VerWrittenCur:X8}. " +
                "Load it with the Microsoft.ML.Peer version that saved it, or retrain.");
        ctx.CheckAtModel(ours);
    }

    public static void SaveJson(ModelSaveContext ctx, object value) =>
        ctx.SaveBinaryStream(OptionsStream, w => w.Write(JsonSerializer.Serialize(value, value.GetType())));

    /// <summary>
    /// Reads the parts every PEER transformer saves after its header: the options, the tokenizer (checked against the
    /// options' vocabulary) and the weights, loaded into the model <paramref name="create"/> builds from the options.
    /// </summary>
    public static (TOptions Options, CompactTokenizer Tokenizer, TModel Model) LoadModel<TOptions, TModel>(ModelLoadContext ctx, string what, Func<TOptions, TModel> create)
        where TOptions : Models.TransformerOptions
        where TModel : torch.nn.Module
    {
        var options = LoadJson<TOptions>(ctx, what);
        var tokenizer = LoadTokenizer(ctx, what);
        if (tokenizer.VocabularySize != options.VocabularySize)
            throw new InvalidDataException($"The {what}'s tokenizer has {tokenizer.VocabularySize} ids but its model expects {options.VocabularySize}: the file is inconsistent.");
        var model = create(options);
        try
        {
            LoadWeights(ctx, model, what);
            return (options, tokenizer, model);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    public static T LoadJson<T>(ModelLoadContext ctx, string what) where T : class
    {
        T? value = null;
        Load(ctx, OptionsStream, what, r => value = JsonSerializer.Deserialize<T>(r.ReadString()));
        return value ?? throw new InvalidDataException($"The {what}'s '{OptionsStream}' stream is empty.");
    }

    public static void SaveTokenizer(ModelSaveContext ctx, CompactTokenizer tokenizer) =>
        ctx.SaveBinaryStream(TokenizerStream, w => tokenizer.Save(w.BaseStream));

    public static CompactTokenizer LoadTokenizer(ModelLoadContext ctx, string what)
    {
        CompactTokenizer? tokenizer = null;
        Load(ctx, TokenizerStream, what, r => tokenizer = CompactTokenizer.Load(r.BaseStream));
        return tokenizer!;
    }

    public static void SaveWeights(ModelSaveContext ctx, torch.nn.Module module) =>
        ctx.SaveBinaryStream(WeightsStream, w => module.save(w));

    public static void LoadWeights(ModelLoadContext ctx, torch.nn.Module module, string what) =>
        Load(ctx, WeightsStream, what, r => module.load(r, strict: true));

    private static void Load(ModelLoadContext ctx, string stream, string what, Action<BinaryReader> read)
    {
        bool found;
        try
        {
            found = ctx.TryLoadBinaryStream(stream, read);
        }
        catch (Exception e) when (e is EndOfStreamException or InvalidDataException or JsonException or ArgumentException or InvalidOperationException or IOException)
        {
            throw new InvalidDataException($"The {what}'s '{stream}' stream is truncated or corrupt: {e.Message}", e);
        }
        if (!found)
            throw new InvalidDataException($"The {what} has no '{stream}' stream: the model file is incomplete or was not written by Microsoft.ML.Peer.");
    }
}
