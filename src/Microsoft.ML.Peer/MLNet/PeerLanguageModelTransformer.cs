using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peer;
using Microsoft.ML.Peer.Data;
using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

[assembly: LoadableClass(typeof(PeerLanguageModelTransformer), null, typeof(SignatureLoadModel),
    "PEER language model", PeerLanguageModelTransformer.LoaderSignature)]

namespace Microsoft.ML.Peer;

/// <summary>
/// A trained PEER language model as an ML.NET transformer. <c>Transform</c> adds the perplexity of each row's
/// text (float; NaN for an empty or missing text) and the number of tokens scored (int). Each text is scored as a
/// document of its own, after the end-of-text id, in windows of the model's context length (a text longer than one
/// window is scored window by window, each window seeing only its own tokens). <see cref="Generate"/> samples text.
/// Safe to use from several threads at once.
/// </summary>
public sealed class PeerLanguageModelTransformer : PeerTransformerBase<TransformerLanguageModel>
{
    internal const string LoaderSignature = "PeerLanguageModel";
    private const string What = "PEER language model";

    private readonly LanguageModelOptions _modelOptions;
    private readonly object _evaluationLock = new();

    internal PeerLanguageModelTransformer(IHostEnvironment env, TransformerLanguageModel model, CompactTokenizer tokenizer,
        LanguageModelOptions modelOptions, string textColumnName, string perplexityColumnName, string tokenCountColumnName)
        : base(env, nameof(PeerLanguageModelTransformer), model, tokenizer, textColumnName)
    {
        _modelOptions = modelOptions.Clone();
        PerplexityColumnName = perplexityColumnName;
        TokenCountColumnName = tokenCountColumnName;
    }

    /// <summary>The perplexity column added.</summary>
    public string PerplexityColumnName { get; }

    /// <summary>The token-count column added.</summary>
    public string TokenCountColumnName { get; }

    /// <summary>The model's shape and feed-forward settings.</summary>
    public LanguageModelOptions ModelOptions => _modelOptions.Clone();

    /// <summary>
    /// Perplexity of the documents of <paramref name="data"/>'s text column taken as one stream (each document followed by
    /// the end-of-text id, as in training), over consecutive windows of the context length, and the expert usage of each
    /// PEER/PKM layer over that pass (the paper's fraction of experts retrieved and KL divergence from uniform).
    /// </summary>
    public PeerLanguageModelMetrics Evaluate(IDataView data) => Evaluate(data, QueryNormStatistics.Running);

    /// <summary>
    /// As <see cref="Evaluate(IDataView)"/>, with the PEER/PKM query batch norms normalising by <paramref name="statistics"/>:
    /// <see cref="QueryNormStatistics.Running"/> as scoring does, or <see cref="QueryNormStatistics.Batch"/>, each batch of
    /// 16 windows by its own mean and variance as in training (the model's running statistics are not changed).
    /// </summary>
    public PeerLanguageModelMetrics Evaluate(IDataView data, QueryNormStatistics statistics)
    {
        if (!Enum.IsDefined(statistics))
            throw new ArgumentOutOfRangeException(nameof(statistics), statistics, $"{nameof(statistics)} must be Running or Batch.");
        ArgumentNullException.ThrowIfNull(data);
        var column = SchemaChecks.TextColumn(data.Schema, TextColumnName);
        var tokens = new List<int>();
        foreach (var text in DataViewReading.Texts(data, column, Host))
        {
            if (text.Length == 0) continue;
            tokens.AddRange(Tokenizer.Encode(text));
            tokens.Add(Tokenizer.EndOfTextId);
        }
        if (tokens.Count < 2)
            throw new ArgumentException(
                $"The texts of column '{TextColumnName}' hold fewer than two tokens; nothing to evaluate.", nameof(data));
        // Usage counters live in the model's routers, so evaluations take turns (scoring rows concurrently is unaffected).
        using var call = UseModel();
        lock (_evaluationLock)
        {
            var result = Training.LanguageModelEvaluation.Evaluate(Model, tokens.ToArray(), _modelOptions.ContextLength, batchSize: 16,
                statistics: statistics);
            return new PeerLanguageModelMetrics(result.Perplexity, result.Loss, result.Tokens, result.ExpertUsage);
        }
    }

    /// <summary>Perplexity and token count of one text (NaN and 0 for an empty text).</summary>
    public (float Perplexity, int TokenCount) Score(string? text)
    {
        if (string.IsNullOrEmpty(text)) return (float.NaN, 0);
        var tokens = Tokenizer.Encode(text);
        int context = _modelOptions.ContextLength;
        double total = 0;
        using var call = UseModel();
        using var noGrad = no_grad();
        for (int start = 0; start < tokens.Length; start += context)
        {
            using var scope = NewDisposeScope();
            int length = Math.Min(context, tokens.Length - start);
            var inputs = new long[length];
            var targets = new long[length];
            inputs[0] = start == 0 ? Tokenizer.EndOfTextId : tokens[start - 1];
            for (int t = 0; t < length; t++)
            {
                if (t > 0) inputs[t] = tokens[start + t - 1];
                targets[t] = tokens[start + t];
            }
            var logits = Model.forward(tensor(inputs, new long[] { 1, length }));
            total += F.cross_entropy(logits.reshape(length, -1), tensor(targets), reduction: nn.Reduction.Sum).item<float>();
        }
        return ((float)Math.Exp(total / tokens.Length), tokens.Length);
    }

    /// <summary>
    /// Continues <paramref name="prompt"/> by up to <paramref name="maxNewTokens"/> tokens, stopping early at the end of a
    /// document. Temperature 0 is greedy; the same seed gives the same text.
    /// </summary>
    public string Generate(string prompt, int maxNewTokens = 40, float temperature = 0.8f, int seed = 0)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        if (maxNewTokens < 0)
            throw new ArgumentOutOfRangeException(nameof(maxNewTokens), maxNewTokens, $"{nameof(maxNewTokens)} must not be negative.");
        if (!(temperature >= 0) || float.IsInfinity(temperature))
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature,
                $"{nameof(temperature)} must be a finite number ≥ 0.");
        var context = new List<int> { Tokenizer.EndOfTextId };
        context.AddRange(Tokenizer.Encode(prompt));
        using var call = UseModel();
        var generated = Model.Generate(context, maxNewTokens, temperature, seed, Tokenizer.EndOfTextId);
        return Tokenizer.Decode(generated.Where(id => id != Tokenizer.EndOfTextId));
    }

    private protected override IRowMapper CreateMapper(DataViewSchema inputSchema, int textIndex)
        => new Mapper(this, inputSchema, textIndex);

    private sealed class Mapper(PeerLanguageModelTransformer parent, DataViewSchema inputSchema, int textIndex)
        : PeerMapper<(float Perplexity, int TokenCount)>(parent, inputSchema, textIndex, parent.Score)
    {
        protected override DataViewSchema.DetachedColumn[] GetOutputColumnsCore() => new[]
        {
            new DataViewSchema.DetachedColumn(parent.PerplexityColumnName, NumberDataViewType.Single),
            new DataViewSchema.DetachedColumn(parent.TokenCountColumnName, NumberDataViewType.Int32),
        };

        protected override Delegate MakeGetter(int iinfo, Func<(float Perplexity, int TokenCount)> score) => iinfo == 0
            ? (ValueGetter<float>)((ref float value) => value = score().Perplexity)
            : (ValueGetter<int>)((ref int value) => value = score().TokenCount);
    }

    // *** Binary format (version 0x00010002; 0x00010001 lacks PeerChecksums.json) ***
    // string: text column; string: perplexity column; string: token-count column
    // streams: PeerOptions.json (LanguageModelOptions), PeerTokenizer.bin, PeerWeights.bin, PeerChecksums.json
    private static VersionInfo GetVersionInfo() => PeerModelPersistence.FormatVersion("PEERLMXF", LoaderSignature);

    private protected override VersionInfo FormatVersion => GetVersionInfo();

    private protected override object SavedOptions => _modelOptions;

    private protected override void SaveHeader(ModelSaveContext ctx)
    {
        ctx.SaveNonEmptyString(PerplexityColumnName);
        ctx.SaveNonEmptyString(TokenCountColumnName);
    }

    private protected override string HeaderDigest => DigestOf(TextColumnName, PerplexityColumnName, TokenCountColumnName);

    private static string DigestOf(string text, string perplexity, string tokenCount) => PeerModelPersistence.HeaderDigest(w =>
    {
        w.Write(text);
        w.Write(perplexity);
        w.Write(tokenCount);
    });

    // Called by ML.NET's model loader through the LoadableClass attribute above.
    internal static PeerLanguageModelTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(ctx);
        PeerModelPersistence.CheckVersion(ctx, GetVersionInfo(), What);
        var (text, perplexity, tokenCount) = PeerModelPersistence.ReadHeader(What,
            () => (ctx.LoadNonEmptyString(), ctx.LoadNonEmptyString(), ctx.LoadNonEmptyString()));
        var (options, tokenizer, model) = PeerModelPersistence.LoadModel(ctx, What, DigestOf(text, perplexity, tokenCount),
            (LanguageModelOptions o) => new TransformerLanguageModel(o));
        return new PeerLanguageModelTransformer(env, model, tokenizer, options, text, perplexity, tokenCount);
    }
}

/// <summary>What <see cref="PeerLanguageModelTransformer.Evaluate"/> measures.</summary>
/// <param name="Perplexity">exp of the mean next-token cross-entropy.</param>
/// <param name="CrossEntropy">Mean next-token cross-entropy, nats.</param>
/// <param name="Tokens">Tokens scored.</param>
/// <param name="ExpertUsage">Per transformer block with a PEER/PKM layer: fraction of experts retrieved and unevenness.</param>
public sealed record PeerLanguageModelMetrics(double Perplexity, double CrossEntropy, long Tokens,
    IReadOnlyDictionary<int, Layers.ExpertUsage> ExpertUsage);
