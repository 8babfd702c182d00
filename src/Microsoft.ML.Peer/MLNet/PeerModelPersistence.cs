using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.ML.Peer.Data;
using TorchSharp;

namespace Microsoft.ML.Peer;

/// <summary>
/// How the PEER transformers live inside an ML.NET model zip: a small header in the transformer's own stream
/// (written through ModelSaveContext), then named binary streams for the options (JSON), the tokenizer, the
/// TorchSharp weights and (from format 0x00010002) their checksums. Loading checks every part before it allocates
/// the model; every failure to read one is an <see cref="InvalidDataException"/> that names the stream.
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

    /// <summary>The stream, added in format 0x00010002, that records the other streams' checksums and who wrote them.</summary>
    public const string ChecksumsStream = "PeerChecksums.json";

    /// <summary>The first format version whose files carry <see cref="ChecksumsStream"/>.</summary>
    public const uint ChecksummedFormat = 0x00010002;

    /// <summary>
    /// The format version every PEER transformer writes (0x00010002 unless a later one is given), under its own 8-character
    /// signature. Files of 0x00010001 (no checksums) still load; 0x00010001 readers can read 0x00010002 files, which only add a
    /// stream; a format that older readers must refuse gives its own <paramref name="readable"/>.
    /// </summary>
    public static VersionInfo FormatVersion(string modelSignature, string loaderSignature, uint written = ChecksummedFormat,
        uint readable = 0x00010001) => new(
        modelSignature: modelSignature,
        verWrittenCur: written,
        verReadableCur: readable,
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
        try
        {
            ctx.CheckAtModel(ours);
        }
        catch (FormatException e)
        {
            throw new InvalidDataException(
                $"The {what}'s header (its Model.key stream) is not a {ours.ModelSignature} header: {e.Message}", e);
        }
    }

    /// <summary>
    /// Reads a transformer's own header fields; any failure (ML.NET's string table, a truncated or absurd field) becomes
    /// an <see cref="InvalidDataException"/> naming the header stream.
    /// </summary>
    public static T ReadHeader<T>(string what, Func<T> read)
    {
        try
        {
            return read();
        }
        catch (Exception e) when (e is not InvalidDataException && IsReadFailure(e))
        {
            throw new InvalidDataException(
                $"The {what}'s header (its Model.key stream) is truncated or corrupt: {e.GetType().Name}: {e.Message}", e);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"The {what}'s header (its Model.key stream) is invalid: {e.Message}", e);
        }
    }

    /// <summary>The SHA-256 of a transformer's header fields as <paramref name="write"/> lays them out.</summary>
    public static string HeaderDigest(Action<BinaryWriter> write)
    {
        using var buffer = new MemoryStream();
        using (var writer = new BinaryWriter(buffer, Encoding.UTF8, leaveOpen: true)) write(writer);
        return Convert.ToHexStringLower(SHA256.HashData(buffer.ToArray()));
    }

    /// <summary>
    /// Writes what follows a transformer's header: the tokenizer, then each model's options (JSON) and weights, each hashed as
    /// it is written, then <see cref="ChecksumsStream"/> with their lengths and SHA-256 and the header's digest. The first
    /// model's streams keep the names of one model (<see cref="OptionsStream"/>, <see cref="WeightsStream"/>); an ensemble's
    /// others are <see cref="MemberOptionsStream"/> and <see cref="MemberWeightsStream"/>.
    /// </summary>
    public static void SaveModel(ModelSaveContext ctx, IReadOnlyList<(object Options, torch.nn.Module Model)> members,
        CompactTokenizer tokenizer, string headerDigest)
    {
        var streams = new Dictionary<string, StreamChecksum>();
        for (int m = 0; m < members.Count; m++)
        {
            var (options, model) = members[m];
            SaveStream(ctx, MemberOptionsStream(m), streams, w => w.Write(JsonSerializer.Serialize(options, options.GetType())));
            if (m == 0) SaveStream(ctx, TokenizerStream, streams, w => tokenizer.Save(w.BaseStream));
            SaveStream(ctx, MemberWeightsStream(m), streams, w => model.save(w));
        }
        var checksums = new SavedChecksums(ProductVersion, headerDigest, streams);
        ctx.SaveBinaryStream(ChecksumsStream, w => w.Write(JsonSerializer.Serialize(checksums)));
    }

    /// <summary>The options stream of an ensemble's model <paramref name="member"/> (0 is <see cref="OptionsStream"/>).</summary>
    public static string MemberOptionsStream(int member) => member == 0 ? OptionsStream : $"PeerOptions.{member}.json";

    /// <summary>The weights stream of an ensemble's model <paramref name="member"/> (0 is <see cref="WeightsStream"/>).</summary>
    public static string MemberWeightsStream(int member) => member == 0 ? WeightsStream : $"PeerWeights.{member}.bin";

    private static void SaveStream(ModelSaveContext ctx, string name, Dictionary<string, StreamChecksum> streams,
        Action<BinaryWriter> write) =>
        ctx.SaveBinaryStream(name, w =>
        {
            w.Flush();
            using var hashing = new ChecksumStream(w.BaseStream);
            using (var writer = new BinaryWriter(hashing, Encoding.UTF8, leaveOpen: true)) write(writer);
            streams[name] = new StreamChecksum(hashing.Count, hashing.Digest());
        });

    /// <summary>
    /// Reads the parts every PEER transformer saves after its header, checking each before the next is trusted: the
    /// checksums (format 0x00010002 on), the options (bounded by <see cref="Models.ModelLimits"/>), the tokenizer
    /// (against the options' vocabulary) and the layout of the weights (against the tensors the options describe). Only
    /// then is the model that <paramref name="create"/> builds from the options allocated and filled. Every failure is
    /// an <see cref="InvalidDataException"/> naming the stream and, where there is one, the field or tensor.
    /// </summary>
    public static (TOptions Options, CompactTokenizer Tokenizer, TModel Model) LoadModel<TOptions, TModel>(
        ModelLoadContext ctx, string what, string headerDigest, Func<TOptions, TModel> create)
        where TOptions : Models.TransformerOptions
        where TModel : torch.nn.Module
    {
        var (tokenizer, members) = LoadMembers(ctx, what, headerDigest, 1, create, (_, _) => { });
        return (members[0].Options, tokenizer, members[0].Model);
    }

    /// <summary>
    /// <see cref="LoadModel"/> for an ensemble of <paramref name="count"/> models sharing one tokenizer: each model's options
    /// and weights are checked as one model's are, and <paramref name="sameShape"/> (given the first model's options and
    /// another's) refuses options that do not belong with the first before that model is built.
    /// </summary>
    public static (CompactTokenizer Tokenizer, IReadOnlyList<(TOptions Options, TModel Model)> Members) LoadMembers<TOptions, TModel>(
        ModelLoadContext ctx, string what, string headerDigest, int count, Func<TOptions, TModel> create, Action<TOptions, TOptions> sameShape)
        where TOptions : Models.TransformerOptions
        where TModel : torch.nn.Module
    {
        SavedChecksums? checksums = null;
        if (ctx.Header.ModelVerWritten >= ChecksummedFormat)
        {
            checksums = LoadChecksums(ctx, what);
            if (!string.Equals(checksums.Header, headerDigest, StringComparison.Ordinal))
                throw new InvalidDataException($"The {what}'s header (its Model.key stream) does not match the checksum recorded in '{ChecksumsStream}' when {checksums.Writer} saved it: the file is corrupt.");
        }

        CompactTokenizer? tokenizer = null;
        var members = new List<(TOptions Options, TModel Model)>();
        try
        {
            for (int m = 0; m < count; m++)
            {
                string optionsStream = MemberOptionsStream(m), weightsStream = MemberWeightsStream(m);
                var options = LoadOptions<TOptions>(ctx, what, optionsStream, checksums);
                if (m == 0)
                {
                    tokenizer = Load(ctx, TokenizerStream, what, checksums, s => CompactTokenizer.Load(s));
                    if (tokenizer.VocabularySize != options.VocabularySize)
                        throw new InvalidDataException($"The {what}'s '{TokenizerStream}' stream has {tokenizer.VocabularySize} ids but '{OptionsStream}' says VocabularySize = {options.VocabularySize}: the file is inconsistent.");
                }
                else
                {
                    try
                    {
                        sameShape(members[0].Options, options);
                    }
                    catch (InvalidDataException e)
                    {
                        throw new InvalidDataException($"The {what}'s '{optionsStream}' stream does not describe a model like '{OptionsStream}': {e.Message}", e);
                    }
                }
                members.Add((options, LoadWeights(ctx, what, optionsStream, weightsStream, checksums, options, create)));
            }
            return (tokenizer!, members);
        }
        catch
        {
            foreach (var (_, model) in members) model.Dispose();
            throw;
        }
    }

    private static TModel LoadWeights<TOptions, TModel>(ModelLoadContext ctx, string what, string optionsStream, string weightsStream,
        SavedChecksums? checksums, TOptions options, Func<TOptions, TModel> create)
        where TOptions : Models.TransformerOptions
        where TModel : torch.nn.Module
    {
        long expected = Models.FlopCounter.StateElements(options);
        var layout = Load(ctx, weightsStream, what, checksums, s => SavedStateDictionary.Read(s, expected));
        long saved = layout.Sum(t => t.Elements);
        if (saved != expected)
            throw new InvalidDataException($"The {what}'s '{weightsStream}' stream holds {saved:N0} values but the model '{optionsStream}' describes has {expected:N0}: the options or the weights are damaged.");

        var model = create(options);
        try
        {
            CheckLayout(model, layout, what, optionsStream, weightsStream);
            Load(ctx, weightsStream, what, null, s =>
            {
                using var reader = new BinaryReader(s, Encoding.UTF8, leaveOpen: true);
                model.load(reader, strict: true);
                return true;
            });
            if (Training.FiniteWeights.FirstNonFinite(model) is { } name)
                throw new InvalidDataException($"The {what}'s '{weightsStream}' stream holds NaN or infinite values in tensor '{name}'.");
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The built model's tensors must be exactly the saved ones, by name, type and shape.</summary>
    private static void CheckLayout(torch.nn.Module model, IReadOnlyList<SavedTensor> layout, string what, string optionsStream,
        string weightsStream)
    {
        var saved = new Dictionary<string, SavedTensor>(StringComparer.Ordinal);
        foreach (var tensor in layout)
            if (!saved.TryAdd(tensor.Name, tensor))
                throw new InvalidDataException($"The {what}'s '{weightsStream}' stream holds tensor '{tensor.Name}' twice.");
        var state = model.state_dict();
        foreach (var (name, tensor) in state)
        {
            if (!saved.Remove(name, out var found))
                throw new InvalidDataException(
                    $"The {what}'s '{weightsStream}' stream has no tensor '{name}', which the model '{optionsStream}' describes needs.");
            var want = new SavedTensor(name, tensor.dtype, tensor.shape);
            if (found.Type != want.Type || !found.Shape.SequenceEqual(want.Shape))
                throw new InvalidDataException($"The {what}'s '{weightsStream}' stream holds tensor '{name}' as {found.Describe()}; the model '{optionsStream}' describes needs {want.Describe()}.");
        }
        if (saved.Count > 0)
            throw new InvalidDataException($"The {what}'s '{weightsStream}' stream holds tensor '{saved.Keys.First()}', which the model '{optionsStream}' describes does not have.");
    }

    private static SavedChecksums LoadChecksums(ModelLoadContext ctx, string what)
    {
        var checksums = Load(ctx, ChecksumsStream, what, null, s =>
        {
            using var reader = new BinaryReader(s, Encoding.UTF8, leaveOpen: true);
            return JsonSerializer.Deserialize<SavedChecksums>(reader.ReadString());
        });
        if (checksums?.Streams is null || checksums.Header is null || checksums.Writer is null)
            throw new InvalidDataException($"The {what}'s '{ChecksumsStream}' stream lacks its writer, header digest or stream list.");
        return checksums;
    }

    private static TOptions LoadOptions<TOptions>(ModelLoadContext ctx, string what, string stream, SavedChecksums? checksums)
        where TOptions : Models.TransformerOptions
    {
        var options = Load(ctx, stream, what, checksums, s =>
        {
            using var reader = new BinaryReader(s, Encoding.UTF8, leaveOpen: true);
            return JsonSerializer.Deserialize<TOptions>(reader.ReadString());
        }) ?? throw new InvalidDataException($"The {what}'s '{stream}' stream is empty (null).");
        try
        {
            switch (options)
            {
                case Models.LanguageModelOptions lm: lm.Validate(); break;
                case Models.TextClassifierOptions classifier: classifier.Validate(); break;
                default: throw new InvalidOperationException($"Unknown model options {typeof(TOptions).Name}.");
            }
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"The {what}'s '{stream}' stream has an invalid {e.ParamName}: {e.Message}", e);
        }
        return options;
    }

    /// <summary>
    /// Opens <paramref name="stream"/> and parses it with <paramref name="read"/>; where <paramref name="checksums"/>
    /// are given, the whole stream must then match its recorded length and SHA-256. Whatever goes wrong is an
    /// <see cref="InvalidDataException"/> naming the stream.
    /// </summary>
    private static T Load<T>(ModelLoadContext ctx, string stream, string what, SavedChecksums? checksums, Func<Stream, T> read)
    {
        StreamChecksum? recorded = null;
        if (checksums is not null && !checksums.Streams.TryGetValue(stream, out recorded))
            throw new InvalidDataException($"The {what}'s '{ChecksumsStream}' stream records no checksum for '{stream}'.");
        T result = default!;
        bool found;
        try
        {
            found = ctx.TryLoadBinaryStream(stream, r =>
            {
                using var hashing = new ChecksumStream(r.BaseStream);
                result = read(hashing);
                hashing.Drain();
                if (recorded is not null &&
                    (hashing.Count != recorded.Length || !string.Equals(hashing.Digest(), recorded.Sha256, StringComparison.Ordinal)))
                    throw new InvalidDataException($"its content does not match the checksum recorded when it was saved ({hashing.Count:N0} bytes read, {recorded.Length:N0} written): the file is corrupt.");
            });
        }
        catch (Exception e) when (IsReadFailure(e))
        {
            throw new InvalidDataException($"The {what}'s '{stream}' stream is truncated or corrupt: {e.Message}", e);
        }
        if (!found)
            throw new InvalidDataException(
                $"The {what} has no '{stream}' stream: the model file is incomplete or was not written by Microsoft.ML.Peer.");
        return result;
    }

    /// <summary>What a damaged file can make parsing throw; a bug's exceptions (and fatal ones) pass through unchanged.</summary>
    private static bool IsReadFailure(Exception e) => e is EndOfStreamException or InvalidDataException or JsonException
        or ArgumentException or InvalidOperationException or IOException or FormatException or OverflowException
        or NotSupportedException or DecoderFallbackException or System.Runtime.InteropServices.ExternalException;
}

/// <summary>The length and SHA-256 (lower-case hex) of one saved stream.</summary>
internal sealed record StreamChecksum(long Length, string Sha256);

/// <summary>The content of <see cref="PeerModelPersistence.ChecksumsStream"/>: who wrote the model, and what.</summary>
internal sealed record SavedChecksums(string Writer, string Header, Dictionary<string, StreamChecksum> Streams);
