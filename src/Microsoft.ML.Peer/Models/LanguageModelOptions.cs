namespace Microsoft.ML.Peer.Models;

/// <summary>
/// Shape of a decoder-only transformer language model (see <see cref="TransformerOptions"/> for every setting).
/// <see cref="TransformerOptions.VocabularySize"/> must be set.
/// </summary>
public sealed class LanguageModelOptions : TransformerOptions
{
    /// <summary>
    /// The recommended language model, stated here once (the ML.NET trainer's defaults are taken from it): context 128,
    /// d = 128, 2 blocks with 4 attention heads, the middle block's feed-forward a PEER layer with N = 128², h = 8, k = 16,
    /// d_key = 64 and sparse row gradients (PKM, when chosen, with the same settings).
    /// </summary>
    public LanguageModelOptions()
    {
        ContextLength = 128;
        ModelDimension = 128;
        Layers = 2;
        AttentionHeads = 4;
        UseProductKeys(experts: 128 * 128, heads: 8, topK: 16, keyDimension: 64);
    }

    /// <summary>A deep copy, so a model owns its settings.</summary>
    public LanguageModelOptions Clone() => (LanguageModelOptions)CloneTransformer();

    /// <summary>Checks every option; the exception names the one that is wrong.</summary>
    public void Validate() => ValidateTransformer(minimumLayers: 1);
}
