namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// The range checks every options class here uses (layer, model, training loop, ML.NET trainer): each throws an
/// <see cref="ArgumentOutOfRangeException"/> that names the option and the value it got.
/// </summary>
internal static class OptionChecks
{
    /// <summary>Throws unless <paramref name="value"/> &gt; 0.</summary>
    public static void Positive(int value, string name)
    {
        if (value <= 0) throw new ArgumentOutOfRangeException(name, value, $"{name} must be positive; got {value}.");
    }

    /// <summary>Throws unless <paramref name="value"/> &gt; 0 (NaN is not).</summary>
    public static void Positive(double value, string name)
    {
        if (!(value > 0)) throw new ArgumentOutOfRangeException(name, value, $"{name} must be positive; got {value}.");
    }

    /// <summary>Throws when <paramref name="value"/> exceeds <paramref name="limit"/>.</summary>
    public static void AtMost(int value, int limit, string name)
    {
        if (value > limit)
            throw new ArgumentOutOfRangeException(name, value, $"{name} must be at most {limit:N0}; got {value:N0}.");
    }
}
