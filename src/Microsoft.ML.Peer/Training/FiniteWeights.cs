using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Training;

/// <summary>
/// The last line against a broken model: a trainer never returns, and a transformer never saves, parameters or buffers
/// (batch-norm running statistics included) that hold NaN or infinity.
/// </summary>
internal static class FiniteWeights
{
    /// <summary>The name of the first parameter or buffer with a non-finite value, or null when all are finite.</summary>
    public static string? FirstNonFinite(nn.Module module)
    {
        using var scope = NewDisposeScope();
        foreach (var (name, parameter) in module.named_parameters())
            if (!torch.isfinite(parameter.detach()).all().item<bool>()) return name;
        foreach (var (name, buffer) in module.named_buffers())
            if (buffer.is_floating_point() && !torch.isfinite(buffer).all().item<bool>()) return name;
        return null;
    }

    /// <summary>Throws <see cref="InvalidOperationException"/> naming the first non-finite tensor and <paramref name="when"/>.</summary>
    public static void Ensure(nn.Module module, string when)
    {
        if (FirstNonFinite(module) is { } name)
            throw new InvalidOperationException($"The model's '{name}' holds NaN or infinite values {when}; it is refused rather than returned or saved as a working model. Lower the learning rate or check the data.");
    }
}
