namespace Microsoft.ML.Peer.Models;

/// <summary>
/// Shape of a decoder-only transformer language model (see <see cref="TransformerOptions"/> for every setting).
/// Defaults are laptop-scale.
/// </summary>
public sealed class LanguageModelOptions : TransformerOptions
{
    /// <summary>A deep copy, so a model owns its settings.</summary>
    public LanguageModelOptions Clone() => (LanguageModelOptions)CloneTransformer();

    /// <summary>Checks every option; the exception names the one that is wrong.</summary>
    public void Validate() => ValidateTransformer(minimumLayers: 1);
}
