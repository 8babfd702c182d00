using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peer;
using Microsoft.ML.Peer.Data;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

[assembly: LoadableClass(typeof(PeerTextClassificationTransformer), null, typeof(SignatureLoadModel),
    "PEER text classifier", PeerTextClassificationTransformer.LoaderSignature)]

namespace Microsoft.ML.Peer;

/// <summary>
/// A trained PEER text classifier as an ML.NET transformer: adds <c>Score</c> (vector of float: the probability of each
/// class, in key order, with the class names as slot names) and <c>PredictedLabel</c> (the most probable class, a key of
/// the label's type with its key values). A text longer than the model's context is truncated as it was in training
/// (<see cref="Truncation"/>); an empty or missing text is scored too. Safe to use from several threads at once (each cursor or prediction
/// engine keeps its own buffers; the model is only read).
/// </summary>
public sealed partial class PeerTextClassificationTransformer : PeerTransformerBase<TransformerTextClassifier>
{
    internal const string LoaderSignature = "PeerTextClassifier";
    private const string What = "PEER text classifier";

    private readonly TextClassifierOptions _modelOptions;
    private readonly LabelKeyValues? _keyValues;

    internal PeerTextClassificationTransformer(IHostEnvironment env, TransformerTextClassifier model, CompactTokenizer tokenizer,
        LabelKeyValues? keyValues,
        TextTruncation truncation, string textColumnName, string scoreColumnName, string predictedLabelColumnName)
        : base(env, nameof(PeerTextClassificationTransformer), model, tokenizer, textColumnName)
    {
        _modelOptions = model.Options;
        _keyValues = keyValues;
        Truncation = truncation;
        ScoreColumnName = scoreColumnName;
        PredictedLabelColumnName = predictedLabelColumnName;
    }

    /// <summary>The class-probability column added.</summary>
    public string ScoreColumnName { get; }

    /// <summary>The predicted-class column added.</summary>
    public string PredictedLabelColumnName { get; }

    /// <summary>Which tokens of a long text the model reads.</summary>
    public TextTruncation Truncation { get; }

    /// <summary>Number of classes.</summary>
    public int ClassCount => _modelOptions.ClassCount;

    /// <summary>The class names (the label's key values, as text) in key order; null if the label had none.</summary>
    public IReadOnlyList<string>? ClassNames => _keyValues?.Values;

    /// <summary>The model's shape and feed-forward settings.</summary>
    public TextClassifierOptions ModelOptions => _modelOptions.Clone();

    /// <summary>Class probabilities of one text (null or empty allowed), in key order.</summary>
    public float[] PredictProbabilities(string? text)
    {
        var ids = Tokenizer.EncodeTruncated(text ?? "", _modelOptions.InputLength, Truncation);
        using var call = UseModel();
        return Model.PredictProbabilities(new[] { ids }, batchSize: 1)[0];
    }

    private protected override IRowMapper CreateMapper(DataViewSchema inputSchema, int textIndex)
        => new Mapper(this, inputSchema, textIndex);

    private sealed class Mapper(PeerTextClassificationTransformer parent, DataViewSchema inputSchema, int textIndex)
        : PeerMapper<float[]>(parent, inputSchema, textIndex, parent.PredictProbabilities)
    {
        protected override DataViewSchema.DetachedColumn[] GetOutputColumnsCore()
        {
            int classes = parent.ClassCount;
            var score = new DataViewSchema.Annotations.Builder();
            parent._keyValues?.AddSlotNames(score);
            // The kinds ML.NET's own multiclass scorers write, so tools that look for a score column find this one.
            score.Add(AnnotationUtils.Kinds.ScoreColumnKind, TextDataViewType.Instance,
                (ref ReadOnlyMemory<char> v) => v = AnnotationUtils.Const.ScoreColumnKind.MulticlassClassification.AsMemory());
            score.Add(AnnotationUtils.Kinds.ScoreValueKind, TextDataViewType.Instance,
                (ref ReadOnlyMemory<char> v) => v = AnnotationUtils.Const.ScoreValueKind.Score.AsMemory());
            var predicted = parent._keyValues?.KeyValuesAnnotation();
            return new[]
            {
                new DataViewSchema.DetachedColumn(parent.ScoreColumnName, new VectorDataViewType(NumberDataViewType.Single, classes),
                    score.ToAnnotations()),
                new DataViewSchema.DetachedColumn(parent.PredictedLabelColumnName, new KeyDataViewType(typeof(uint), classes), predicted),
            };
        }

        protected override Delegate MakeGetter(int iinfo, Func<float[]> probabilities) => iinfo == 0
            ? (ValueGetter<VBuffer<float>>)((ref VBuffer<float> value) =>
            {
                var p = probabilities();
                var editor = VBufferEditor.Create(ref value, p.Length);
                p.AsSpan().CopyTo(editor.Values);
                value = editor.Commit();
            })
            : (ValueGetter<uint>)((ref uint value) =>
            {
                var p = probabilities();
                int best = 0;
                for (int c = 1; c < p.Length; c++) if (p[c] > p[best]) best = c;
                value = (uint)best + 1;  // keys are 1-based; 0 means missing
            });
    }

    // *** Binary format (version 0x00010002; 0x00010001 lacks PeerChecksums.json) ***
    // string: text column; string: score column; string: predicted-label column
    // bool: has key values; [key values: tag, count, strings]; int: TextTruncation
    // streams: PeerOptions.json (TextClassifierOptions), PeerTokenizer.bin, PeerWeights.bin, PeerChecksums.json
    private static VersionInfo GetVersionInfo() => PeerModelPersistence.FormatVersion("PEERTCXF", LoaderSignature);

    private protected override VersionInfo FormatVersion => GetVersionInfo();

    private protected override object SavedOptions => _modelOptions;

    private protected override void SaveHeader(ModelSaveContext ctx)
    {
        ctx.SaveNonEmptyString(ScoreColumnName);
        ctx.SaveNonEmptyString(PredictedLabelColumnName);
        ctx.Writer.Write(_keyValues is not null);
        _keyValues?.Save(ctx.Writer);
        ctx.Writer.Write((int)Truncation);
    }

    private protected override string HeaderDigest
        => DigestOf(TextColumnName, ScoreColumnName, PredictedLabelColumnName, _keyValues, Truncation);

    private static string DigestOf(string text, string score, string predicted, LabelKeyValues? keyValues, TextTruncation truncation) =>
        PeerModelPersistence.HeaderDigest(w =>
        {
            w.Write(text);
            w.Write(score);
            w.Write(predicted);
            w.Write(keyValues is not null);
            keyValues?.Save(w);
            w.Write((int)truncation);
        });

    // Called by ML.NET's model loader through the LoadableClass attribute above.
    internal static PeerTextClassificationTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(ctx);
        PeerModelPersistence.CheckVersion(ctx, GetVersionInfo(), What);
        var (text, score, predicted, keyValues, truncation) = PeerModelPersistence.ReadHeader(What, () =>
        {
            string text = ctx.LoadNonEmptyString(), score = ctx.LoadNonEmptyString(), predicted = ctx.LoadNonEmptyString();
            var keyValues = ctx.Reader.ReadBoolean() ? LabelKeyValues.Load(ctx.Reader) : null;
            var truncation = (TextTruncation)ctx.Reader.ReadInt32();
            if (!Enum.IsDefined(truncation)) throw new InvalidDataException($"it names an unknown truncation mode {(int)truncation}.");
            return (text, score, predicted, keyValues, truncation);
        });
        var (options, tokenizer, model) = PeerModelPersistence.LoadModel(ctx, What, DigestOf(text, score, predicted, keyValues, truncation),
            (TextClassifierOptions o) =>
            {
                if (keyValues is not null && keyValues.Values.Length != o.ClassCount)
                    throw new InvalidDataException($"The {What}'s header names {keyValues.Values.Length} classes but '{PeerModelPersistence.OptionsStream}' says ClassCount = {o.ClassCount}: the file is inconsistent.");
                return new TransformerTextClassifier(o);
            });
        return new PeerTextClassificationTransformer(env, model, tokenizer, keyValues, truncation, text, score, predicted);
    }
}
