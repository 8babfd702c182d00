using TorchSharp;

namespace Microsoft.ML.Peer;

/// <summary>Parses the trainers' Device option into a TorchSharp device, with errors that say what is missing.</summary>
internal static class TorchDevices
{
    public static torch.Device Parse(string device, string optionName)
    {
        if (string.IsNullOrWhiteSpace(device))
            throw new ArgumentException($"{optionName} must name a device such as \"cpu\" or \"cuda\".", optionName);
        torch.Device parsed;
        try
        {
            parsed = new torch.Device(device.Trim());
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidOperationException)
        {
            throw new ArgumentOutOfRangeException(optionName, device,
                $"{optionName} \"{device}\" is not a TorchSharp device (expected \"cpu\", \"cuda\" or \"cuda:N\").");
        }
        if (parsed.type == DeviceType.CUDA && !torch.cuda.is_available())
            throw new ArgumentOutOfRangeException(optionName, device,
                $"{optionName} is \"{device}\" but CUDA is not available: this build uses the TorchSharp backend package without CUDA, or no GPU is visible. Build with -p:TorchBackend=cuda-linux on a machine with a GPU, or use \"cpu\".");
        if (parsed.type is not (DeviceType.CPU or DeviceType.CUDA))
            throw new ArgumentOutOfRangeException(optionName, device,
                $"{optionName} \"{device}\" is not supported; use \"cpu\" or \"cuda\".");
        return parsed;
    }
}
