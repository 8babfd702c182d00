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
/// (<see cref="Truncation"/>); an empty or missing text is scored too. An ensemble (<see cref="Members"/>, from
/// <see cref="PeerTextClassificationTrainer.Options.EnsembleSize"/>) scores the average of its models' probabilities. Safe to use from
/// several threads at once (each cursor or prediction engine keeps its own buffers; the models are only read).
/// </summary>
public sealed partial class PeerTextClassificationTransformer : PeerTransformerBase<TransformerTextClassifier>
{
    internal const string LoaderSignature = "PeerTextClassifier";
    private const string What = "PEER text classifier";

    private readonly TextClassifierOptions _modelOptions;
    private readonly LabelKeyValues? _keyValues;
    private readonly TransformerTextClassifier[] _members;

    // members: the models whose probabilities are averaged (one, or an ensemble of one shape), owned by the transformer from here on.
    internal PeerTextClassificationTransformer(IHostEnvironment env, IReadOnlyList<TransformerTextClassifier> members, CompactTokenizer tokenizer,
        LabelKeyValues? keyValues,
        TextTruncation truncation, string textColumnName, string scoreColumnName, string predictedLabelColumnName)
        : base(env, nameof(PeerTextClassificationTransformer), members[0], tokenizer, textColumnName)
    {
        _members = members.ToArray();
        foreach (var member in _members) member.eval();
        _modelOptions = members[0].Options;
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

    /// <summary>The model's shape and feed-forward settings (of an ensemble, its first model's: the shape of them all; each has its
    /// own score temperature).</summary>
    public TextClassifierOptions ModelOptions => _modelOptions.Clone();

    /// <summary>The models whose class probabilities are averaged: <see cref="PeerTransformerBase{TModel}.Model"/> alone, or an
    /// ensemble of models of one shape trained from different seeds (<see cref="PeerTextClassificationTrainer.Options.EnsembleSize"/>),
    /// <see cref="PeerTransformerBase{TModel}.Model"/> first. Owned by this transformer.</summary>
    public IReadOnlyList<TransformerTextClassifier> Members => _members;

    /// <summary>Class probabilities of one text (null or empty allowed), in key order: the mean of <see cref="Members"/>'.</summary>
    public float[] PredictProbabilities(string? text)
    {
        var ids = new[] { Tokenizer.EncodeTruncated(text ?? "", _modelOptions.InputLength, Truncation) };
        using var call = UseModel();
        var probabilities = _members[0].PredictProbabilities(ids, batchSize: 1)[0];
        if (_members.Length == 1) return probabilities;
        for (int m = 1; m < _members.Length; m++)
        {
            var other = _members[m].PredictProbabilities(ids, batchSize: 1)[0];
            for (int c = 0; c < probabilities.Length; c++) probabilities[c] += other[c];
        }
        for (int c = 0; c < probabilities.Length; c++) probabilities[c] /= _members.Length;
        return probabilities;
    }

    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);    // waits for the calls in flight, then frees Model (the first member)
        if (disposing)
            foreach (var member in _members.Skip(1)) member.Dispose();
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

    // *** Binary format (version 0x00010002 for one model, 0x00010001 lacking PeerChecksums.json; 0x00010003 for an ensemble) ***
    // string: text column; string: score column; string: predicted-label column
    // bool: has key values; [key values: tag, count, strings]; int: TextTruncation; [0x00010003: int: models, 2 or more]
    // streams: PeerOptions.json (TextClassifierOptions), PeerTokenizer.bin, PeerWeights.bin, [PeerOptions.m.json, PeerWeights.m.bin
    // for each further model m], PeerChecksums.json
    // One model is still written as 0x00010002, so the versions before ensembles read it; an ensemble is readable from 0x00010003
    // only, so that they refuse it instead of scoring its first model alone.
    private const uint EnsembleFormat = 0x00010003;

    private const string ModelSignature = "PEERTCXF";

    // What the loader accepts: every format up to the ensemble's.
    private static VersionInfo GetVersionInfo() =>
        PeerModelPersistence.FormatVersion(ModelSignature, LoaderSignature, written: EnsembleFormat, readable: EnsembleFormat);

    private protected override VersionInfo FormatVersion => _members.Length > 1
        ? GetVersionInfo()
        : PeerModelPersistence.FormatVersion(ModelSignature, LoaderSignature);

    private protected override object SavedOptions => _modelOptions;

    private protected override IReadOnlyList<(object Options, nn.Module Model)> SavedMembers =>
        _members.Select(m => ((object)m.Options, (nn.Module)m)).ToArray();

    private protected override void SaveHeader(ModelSaveContext ctx)
    {
        ctx.SaveNonEmptyString(ScoreColumnName);
        ctx.SaveNonEmptyString(PredictedLabelColumnName);
        ctx.Writer.Write(_keyValues is not null);
        _keyValues?.Save(ctx.Writer);
        ctx.Writer.Write((int)Truncation);
        if (_members.Length > 1) ctx.Writer.Write(_members.Length);
    }

    private protected override string HeaderDigest
        => DigestOf(TextColumnName, ScoreColumnName, PredictedLabelColumnName, _keyValues, Truncation, _members.Length);

    private static string DigestOf(string text, string score, string predicted, LabelKeyValues? keyValues, TextTruncation truncation,
        int members) =>
        PeerModelPersistence.HeaderDigest(w =>
        {
            w.Write(text);
            w.Write(score);
            w.Write(predicted);
            w.Write(keyValues is not null);
            keyValues?.Save(w);
            w.Write((int)truncation);
            if (members > 1) w.Write(members);
        });

    // Called by ML.NET's model loader through the LoadableClass attribute above.
    internal static PeerTextClassificationTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(ctx);
        PeerModelPersistence.CheckVersion(ctx, GetVersionInfo(), What);
        var (text, score, predicted, keyValues, truncation, count) = PeerModelPersistence.ReadHeader(What, () =>
        {
            string text = ctx.LoadNonEmptyString(), score = ctx.LoadNonEmptyString(), predicted = ctx.LoadNonEmptyString();
            var keyValues = ctx.Reader.ReadBoolean() ? LabelKeyValues.Load(ctx.Reader) : null;
            var truncation = (TextTruncation)ctx.Reader.ReadInt32();
            if (!Enum.IsDefined(truncation)) throw new InvalidDataException($"it names an unknown truncation mode {(int)truncation}.");
            int count = 1;
            if (ctx.Header.ModelVerWritten >= EnsembleFormat)
            {
                count = ctx.Reader.ReadInt32();
                if (count < 2 || count > ModelLimits.EnsembleSize)
                    throw new InvalidDataException($"it names an ensemble of {count} models; an ensemble has 2 to {ModelLimits.EnsembleSize}.");
            }
            return (text, score, predicted, keyValues, truncation, count);
        });
        var (tokenizer, members) = PeerModelPersistence.LoadMembers(ctx, What, DigestOf(text, score, predicted, keyValues, truncation, count), count,
            (TextClassifierOptions o) =>
            {
                if (keyValues is not null && keyValues.Values.Length != o.ClassCount)
                    throw new InvalidDataException($"The {What}'s header names {keyValues.Values.Length} classes but '{PeerModelPersistence.OptionsStream}' says ClassCount = {o.ClassCount}: the file is inconsistent.");
                return new TransformerTextClassifier(o);
            }, TextClassifierOptions.CheckSameShape);
        return new PeerTextClassificationTransformer(env, members.Select(m => m.Model).ToArray(), tokenizer, keyValues, truncation, text, score,
            predicted);
    }
}
