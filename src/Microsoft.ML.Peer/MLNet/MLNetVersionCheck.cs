using System.Reflection;

namespace Microsoft.ML.Peer;

/// <summary>
/// The plugin uses internals of the exact ML.NET version it was compiled against (eng/PublicizeMLNet.targets). If an
/// application loads another one (a newer package unified over ours, a binding redirect), those internals may differ,
/// so the plugin refuses to run with a message naming both versions rather than failing later inside ML.NET.
/// </summary>
internal static class MLNetVersionCheck
{
    private static readonly Lazy<string?> Mismatch = new(() =>
    {
        string? expected = typeof(MLNetVersionCheck).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "MicrosoftMLVersion")?.Value;
        string? loaded = typeof(MLContext).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
        if (expected is null || loaded is null) return null;
        // Informational versions look like "5.0.1+commit"; compare the release part.
        string release = loaded.Split('+')[0];
        return release == expected ? null
            : $"Microsoft.ML.Peer {PeerModelPersistence.ProductVersion} was built against Microsoft.ML {expected}, but Microsoft.ML {release} is loaded. " +
              $"It relies on that version's model save/load internals: reference Microsoft.ML {expected} exactly, or use a Microsoft.ML.Peer built for {release}.";
    });

    public static void EnsureCompatible()
    {
        if (Mismatch.Value is { } message) throw new NotSupportedException(message);
    }
}
