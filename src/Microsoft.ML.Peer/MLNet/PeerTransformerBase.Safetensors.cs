namespace Microsoft.ML.Peer;

public abstract partial class PeerTransformerBase<TModel>
{
    /// <summary>
    /// Writes the model's weights and options to a <c>safetensors</c> file at <paramref name="path"/> (PyTorch-style
    /// tensor names, the options as JSON metadata; see <see cref="PeerSafetensors"/> and docs/interop.md), which the PyTorch
    /// twin in <c>python/peer_twin</c> loads. An ensemble's models are written to the one file, each model's tensors under
    /// <c>members.{m}.</c>. The tokenizer is not part of it: keep it with <see cref="Data.CompactTokenizer.Save"/>.
    /// </summary>
    public void ExportSafetensors(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        using var call = UseModel();
        var (options, kind) = SavedOptions switch
        {
            Models.LanguageModelOptions lm => ((Models.TransformerOptions)lm, PeerSafetensors.LanguageModelKind),
            Models.TextClassifierOptions classifier => (classifier, PeerSafetensors.TextClassifierKind),
            _ => throw new InvalidOperationException($"Unknown model options {SavedOptions.GetType().Name}."),
        };
        PeerSafetensors.Write(path, SavedMembers.Select(m => m.Model).ToArray(), options, kind, SafetensorsMetadata);
    }

    /// <summary>What the transformer adds to the export's metadata besides the options (the classifier: class names, truncation).</summary>
    private protected virtual IEnumerable<KeyValuePair<string, string>> SafetensorsMetadata => Array.Empty<KeyValuePair<string, string>>();
}
