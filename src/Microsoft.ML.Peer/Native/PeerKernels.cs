namespace Microsoft.ML.Peer.Native;

/// <summary>Which implementation computes the experts of a PEER layer.</summary>
public enum PeerKernels
{
    /// <summary>Native fused kernels when libpeer_native is loaded and the tensors are float32 on the CPU; managed otherwise.</summary>
    Auto,
    /// <summary>Composed TorchSharp operations (gathers of the expert rows); runs anywhere TorchSharp does.</summary>
    Managed,
    /// <summary>Native fused kernels; fails with a clear error when they cannot be used.</summary>
    Native,
}
