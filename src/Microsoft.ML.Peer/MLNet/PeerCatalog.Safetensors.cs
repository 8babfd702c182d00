using System.Text.Json;
using Microsoft.ML.Peer.Data;
using Microsoft.ML.Peer.Models;

namespace Microsoft.ML.Peer;

public sealed partial class PeerCatalog
{
    /// <summary>
    /// A language model transformer from a <c>safetensors</c> file (written by <see cref="PeerTransformerBase{TModel}.ExportSafetensors"/>
    /// or by the PyTorch twin, python/peer_twin) and the tokenizer its token ids come from. It scores, evaluates, generates
    /// and saves in an ML.NET zip exactly as a trained one does.
    /// </summary>
    /// <param name="path">The safetensors file.</param>
    /// <param name="tokenizer">The tokenizer the model was trained with; its vocabulary must equal the model's.</param>
    /// <param name="textColumnName">The text to score (String).</param>
    /// <param name="perplexityColumnName">The perplexity column written (float).</param>
    /// <param name="tokenCountColumnName">The token-count column written (int).</param>
    /// <exception cref="InvalidDataException">The file is damaged, is not a language model, or does not match its options.</exception>
    public PeerLanguageModelTransformer LanguageModelFromSafetensors(string path, CompactTokenizer tokenizer,
        string textColumnName = "Text", string perplexityColumnName = "Perplexity", string tokenCountColumnName = "TokenCount")
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ColumnNames((textColumnName, nameof(textColumnName)), (perplexityColumnName, nameof(perplexityColumnName)),
            (tokenCountColumnName, nameof(tokenCountColumnName)));
        var (model, options, _) = PeerSafetensors.Read(path, PeerSafetensors.LanguageModelKind,
            (LanguageModelOptions o) => { o.Validate(); return o; }, o => new TransformerLanguageModel(o));
        try
        {
            CheckTokenizer(tokenizer, options, path);
            return new PeerLanguageModelTransformer(_env, model, tokenizer, options, textColumnName, perplexityColumnName,
                tokenCountColumnName);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A text classifier transformer from a <c>safetensors</c> file (written by <see cref="PeerTransformerBase{TModel}.ExportSafetensors"/>
    /// or by the PyTorch twin) and the tokenizer its token ids come from: one model, or an ensemble's models. The class names and
    /// the truncation are the file's (an export from ML.NET records them) unless given here.
    /// </summary>
    /// <param name="path">The safetensors file.</param>
    /// <param name="tokenizer">The tokenizer the model was trained with: its vocabulary must equal the model's, and its end-of-text id must
    /// be the model's padding id.</param>
    /// <param name="textColumnName">The text to classify (String).</param>
    /// <param name="scoreColumnName">The class probabilities written (vector of float).</param>
    /// <param name="predictedLabelColumnName">The predicted class written (key).</param>
    /// <param name="classNames">The names of the classes, in label order (text key values); null: those of the file, if any.</param>
    /// <param name="truncation">Which tokens of a long text the model reads; null: the file's, else
    /// <see cref="TextTruncation.KeepStartAndEnd"/>.</param>
    /// <exception cref="InvalidDataException">The file is damaged, is not a text classifier, or does not match its options.</exception>
    public PeerTextClassificationTransformer TextClassifierFromSafetensors(string path, CompactTokenizer tokenizer,
        string textColumnName = "Text", string scoreColumnName = "Score", string predictedLabelColumnName = "PredictedLabel",
        IReadOnlyList<string>? classNames = null, TextTruncation? truncation = null)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ColumnNames((textColumnName, nameof(textColumnName)), (scoreColumnName, nameof(scoreColumnName)),
            (predictedLabelColumnName, nameof(predictedLabelColumnName)));
        if (truncation is { } t && !Enum.IsDefined(t))
            throw new ArgumentOutOfRangeException(nameof(truncation), t, $"Unknown {nameof(truncation)} {t}.");
        var (models, options, metadata) = PeerSafetensors.Read(path, PeerSafetensors.TextClassifierKind,
            (TextClassifierOptions o) => { o.Validate(); return o; }, o => new TransformerTextClassifier(o),
            (o, m) => PeerSafetensors.ClassifierMembers(o, m, path));
        try
        {
            CheckTokenizer(tokenizer, options, path);
            if (options.PaddingId != tokenizer.EndOfTextId)
                throw new ArgumentException($"The classifier in '{path}' pads with token {options.PaddingId} but the tokenizer's end-of-text id, which the ML.NET transformer pads with and Encode never produces, is {tokenizer.EndOfTextId}: export the model with PaddingId = the tokenizer's EndOfTextId.", nameof(tokenizer));
            LabelKeyValues? keyValues;
            if (classNames is not null)
            {
                if (classNames.Count != options.ClassCount)
                    throw new ArgumentException(
                        $"{classNames.Count} class names were given for the {options.ClassCount} classes of the classifier in '{path}'.",
                        nameof(classNames));
                if (classNames.Any(n => n is null)) throw new ArgumentException("A class name is null.", nameof(classNames));
                keyValues = LabelKeyValues.Create("TX", classNames.ToArray());
            }
            else
            {
                keyValues = metadata.TryGetValue(PeerSafetensors.LabelKeyValuesKey, out var json)
                    ? ReadKeyValues(json, path, options.ClassCount)
                    : null;
            }
            var readTruncation = truncation ?? (metadata.TryGetValue(PeerSafetensors.TruncationKey, out var saved)
                ? Enum.TryParse<TextTruncation>(saved, out var parsed) && Enum.IsDefined(parsed) ? parsed
                    : throw new InvalidDataException($"The safetensors file '{path}' names an unknown truncation '{Interop.SafetensorsFile.Printable(saved)}' in '{PeerSafetensors.TruncationKey}'.")
                : TextTruncation.KeepStartAndEnd);
            return new PeerTextClassificationTransformer(_env, models, tokenizer, keyValues, readTruncation, textColumnName, scoreColumnName,
                predictedLabelColumnName);
        }
        catch
        {
            foreach (var model in models) model.Dispose();
            throw;
        }
    }

    private static LabelKeyValues ReadKeyValues(string json, string path, int classCount)
    {
        try
        {
            var saved = JsonSerializer.Deserialize<SafetensorsKeyValues>(json);
            if (saved?.Type is null || saved.Values is null) throw new InvalidDataException("it lacks its type or values.");
            var keyValues = LabelKeyValues.Create(saved.Type, saved.Values);
            if (keyValues.Values.Length != classCount)
                throw new InvalidDataException($"it names {keyValues.Values.Length} classes but the model has {classCount}.");
            return keyValues;
        }
        catch (Exception e) when (e is JsonException or InvalidDataException)
        {
            throw new InvalidDataException(
                $"The safetensors file '{path}' has invalid '{PeerSafetensors.LabelKeyValuesKey}' metadata: {e.Message}", e);
        }
    }

    private static void CheckTokenizer(CompactTokenizer tokenizer, TransformerOptions options, string path)
    {
        if (tokenizer.VocabularySize != options.VocabularySize)
            throw new ArgumentException($"The tokenizer has {tokenizer.VocabularySize} ids but the model in '{path}' has VocabularySize = {options.VocabularySize}: pass the tokenizer the model was trained with.", nameof(tokenizer));
    }

    private static void ColumnNames(params (string Name, string Parameter)[] columns)
    {
        foreach (var (name, parameter) in columns)
            if (string.IsNullOrWhiteSpace(name)) throw new ArgumentException($"{parameter} must name a column.", parameter);
        for (int i = 1; i < columns.Length; i++)
            for (int j = 0; j < i; j++)
                if (columns[i].Name == columns[j].Name)
                    throw new ArgumentException(
                        $"{columns[j].Parameter} and {columns[i].Parameter} are both '{columns[i].Name}'.", columns[i].Parameter);
    }
}
