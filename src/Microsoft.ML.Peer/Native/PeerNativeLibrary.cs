using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Native;

/// <summary>
/// Whether the native kernels can be used, decided once per process. A missing or unloadable library
/// (or PEER_NATIVE=0) means the managed TorchSharp path, announced by a single warning.
/// </summary>
public static class PeerNativeLibrary
{
    /// <summary>ABI version this assembly was written against.</summary>
    internal const int ExpectedAbiVersion = 3;

    private static readonly Lazy<(bool Available, string Reason)> State = new(Probe, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>True when libpeer_native loaded and speaks the expected ABI.</summary>
    public static bool IsAvailable => State.Value.Available;

    /// <summary>Why the native kernels are not used (empty when they are).</summary>
    public static string UnavailableReason => State.Value.Reason;

    /// <summary>Where the one fallback warning goes; defaults to standard error.</summary>
    internal static Action<string> Warn { get; set; } = message => Console.Error.WriteLine(message);

    private static (bool, string) Probe() =>
        Decide(PeerNativeMethods.AbiVersion, Environment.GetEnvironmentVariable("PEER_NATIVE"), Warn, MissingCpuFeatures());

    /// <summary>
    /// The instruction-set features of x86-64-v3, which the shipped library is compiled for (src/Peer.Native/CMakeLists.txt),
    /// that this CPU lacks; empty when it has them all or is not x86-64 (other systems build their own library).
    /// </summary>
    internal static string MissingCpuFeatures()
    {
        if (RuntimeInformation.ProcessArchitecture != Architecture.X64) return "";
        var missing = new List<string>();
        if (!System.Runtime.Intrinsics.X86.Avx2.IsSupported) missing.Add("AVX2");
        if (!System.Runtime.Intrinsics.X86.Fma.IsSupported) missing.Add("FMA");
        if (!System.Runtime.Intrinsics.X86.Bmi1.IsSupported) missing.Add("BMI1");
        if (!System.Runtime.Intrinsics.X86.Bmi2.IsSupported) missing.Add("BMI2");
        if (!System.Runtime.Intrinsics.X86.Lzcnt.IsSupported) missing.Add("LZCNT");
        if (System.Runtime.Intrinsics.X86.X86Base.IsSupported)
        {
            int ecx = System.Runtime.Intrinsics.X86.X86Base.CpuId(1, 0).Ecx;
            if ((ecx & (1 << 22)) == 0) missing.Add("MOVBE");
            if ((ecx & (1 << 29)) == 0) missing.Add("F16C");
        }
        return string.Join(", ", missing);
    }

    /// <summary>The decision, with its inputs passed in so it can be tested without unloading anything.</summary>
    internal static (bool Available, string Reason) Decide(Func<int> abiVersion, string? switchValue, Action<string> warn,
        string missingCpuFeatures = "")
    {
        string reason;
        if (switchValue == "0")
        {
            reason = "PEER_NATIVE=0";
        }
        else if (missingCpuFeatures.Length > 0)
        {
            // Checked before loading: the library would stop the process with an illegal instruction.
            reason = $"this CPU lacks {missingCpuFeatures}, which libpeer_native (built for x86-64-v3) needs";
        }
        else
        {
            try
            {
                int version = abiVersion();
                if (version == ExpectedAbiVersion) return (true, "");
                reason = $"libpeer_native speaks ABI version {version}, this assembly needs {ExpectedAbiVersion}";
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
            {
                reason = $"libpeer_native could not be loaded ({e.GetType().Name}: {e.Message.Split('\n')[0]})";
            }
        }
        warn($"warning: Microsoft.ML.Peer uses its managed PEER kernels: {reason}.");
        return (false, reason);
    }

    /// <summary>
    /// Whether to run the native CPU kernels on <paramref name="tensors"/>: never for Managed; for Native, yes or a
    /// clear error; for Auto, when the library is loaded and every tensor is float32 on the CPU.
    /// </summary>
    internal static bool ShouldUse(PeerKernels kernels, params Tensor[] tensors) => ShouldUse(kernels, tensors, Array.Empty<Tensor>());

    /// <summary>
    /// <see cref="ShouldUse(PeerKernels, Tensor[])"/> for kernels that also read expert <paramref name="tables"/>, which may be
    /// float32 or bfloat16 (the kernels have both forms).
    /// </summary>
    internal static bool ShouldUse(PeerKernels kernels, Tensor[] tensors, Tensor[] tables)
    {
        if (kernels != PeerKernels.Native) return CanUse(kernels, tensors, tables);
        RequireAvailable(kernels, "Kernels is Native");
        var unsuitable = tensors.FirstOrDefault(t => !Suits(t, table: false)) ?? tables.FirstOrDefault(t => !Suits(t, table: true));
        if (unsuitable is not null)
            throw new InvalidOperationException(
                "Kernels is Native, which needs float32 tensors (float32 or bfloat16 expert tables) on the CPU; " +
                $"got {unsuitable.dtype} on {unsuitable.device}.");
        return true;
    }

    /// <summary>
    /// Whether the native CPU kernels may run on <paramref name="tensors"/>, never throwing: not for Managed, and
    /// otherwise when every tensor is float32 on the CPU and the library is loaded (it is probed only then). Where
    /// Native is asked for but a tensor does not suit, the caller takes its managed path (the row-sparse optimizer does).
    /// </summary>
    internal static bool CanUse(PeerKernels kernels, params Tensor[] tensors) => CanUse(kernels, tensors, Array.Empty<Tensor>());

    /// <summary><see cref="CanUse(PeerKernels, Tensor[])"/> where <paramref name="tables"/> may also be bfloat16.</summary>
    internal static bool CanUse(PeerKernels kernels, Tensor[] tensors, Tensor[] tables) =>
        kernels != PeerKernels.Managed && tensors.All(t => Suits(t, table: false)) && tables.All(t => Suits(t, table: true)) &&
        IsAvailable;

    /// <summary>Throws, saying <paramref name="asker"/> wanted them, when <paramref name="kernels"/> is Native and the library is not
    /// available.</summary>
    internal static void RequireAvailable(PeerKernels kernels, string asker)
    {
        if (kernels == PeerKernels.Native && !IsAvailable) throw new InvalidOperationException($"{asker}, but {UnavailableReason}.");
    }

    private static bool Suits(Tensor t, bool table) =>
        (t.dtype == ScalarType.Float32 || table && t.dtype == ScalarType.BFloat16) && t.device_type == TorchSharp.DeviceType.CPU;

    /// <summary>Throws with the library's own message when a native call did not return PEER_OK.</summary>
    internal static void Check(int status, string call)
    {
        if (status == PeerNativeMethods.Ok) return;
        var message = Marshal.PtrToStringUTF8(PeerNativeMethods.LastError()) ?? "";
        throw status == 1
            ? new ArgumentException($"{call}: {message}")
            : new InvalidOperationException($"{call} failed with status {status}: {message}");
    }

    /// <summary>
    /// Asks for transparent huge pages on the storage of <paramref name="table"/>, a large CPU tensor read at random rows
    /// (peer_advise_hugepages): 1 KB rows at random addresses of a 1 GiB table otherwise miss the TLB on almost every
    /// read. Advice only: returns the bytes advised, 0 where it does not apply (library unavailable, not a contiguous
    /// CPU tensor, THP disabled, another system). Contents are unchanged.
    /// </summary>
    internal static unsafe long AdviseHugePages(Tensor table)
    {
        ArgumentNullException.ThrowIfNull(table);
        if (!IsAvailable || table.device_type != TorchSharp.DeviceType.CPU || !table.is_contiguous() || table.numel() == 0) return 0;
        long advised = 0;
        Check(PeerNativeMethods.AdviseHugePages((void*)PeerNativeMethods.TensorData(table.Handle), table.numel() * table.element_size(),
            &advised),
            "peer_advise_hugepages");
        return advised;
    }

    /// <summary>Raw data pointer of a contiguous CPU tensor of the expected type.</summary>
    internal static unsafe T* Pointer<T>(Tensor tensor, ScalarType type, string name) where T : unmanaged
    {
        if (tensor.dtype != type) throw new ArgumentException($"{name} must be {type}; got {tensor.dtype}.");
        if (tensor.device_type != TorchSharp.DeviceType.CPU)
            throw new ArgumentException($"{name} must be on the CPU for the native CPU kernels; got {tensor.device}.");
        if (!tensor.is_contiguous()) throw new ArgumentException($"{name} must be contiguous.");
        return (T*)PeerNativeMethods.TensorData(tensor.Handle);
    }
}
