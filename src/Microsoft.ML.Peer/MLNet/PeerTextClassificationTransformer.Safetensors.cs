using System.Text.Json;
using System.Text.Json.Serialization;

namespace Microsoft.ML.Peer;

public sealed partial class PeerTextClassificationTransformer
{
    /// <summary>The label's key values (type tag and invariant strings), the truncation and an ensemble's size and temperatures, so an
    /// import scores as this transformer does.</summary>
    private protected override IEnumerable<KeyValuePair<string, string>> SafetensorsMetadata
    {
        get
        {
            yield return new(PeerSafetensors.TruncationKey, Truncation.ToString());
            if (_members.Length > 1)
            {
                yield return new(PeerSafetensors.EnsembleSizeKey, _members.Length.ToString(System.Globalization.CultureInfo.InvariantCulture));
                yield return new(PeerSafetensors.ScoreTemperaturesKey, JsonSerializer.Serialize(_members.Select(m => m.Options.ScoreTemperature)));
            }
            if (_keyValues is not null)
                yield return new(PeerSafetensors.LabelKeyValuesKey,
                    JsonSerializer.Serialize(new SafetensorsKeyValues(_keyValues.Tag, _keyValues.Values)));
        }
    }
}

/// <summary>The label's key values in a safetensors export's metadata: ML.NET's type tag (TX, BL, R4, R8, I4, I8, U4, U8) and the values as
/// invariant strings.</summary>
internal sealed record SafetensorsKeyValues([property: JsonPropertyName("type")] string Type,
    [property: JsonPropertyName("values")] string[] Values);
