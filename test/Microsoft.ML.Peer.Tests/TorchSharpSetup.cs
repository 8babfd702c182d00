using System.Runtime.CompilerServices;
using Microsoft.ML.Peer.Native;

namespace Microsoft.ML.Peer.Tests;

internal static class TorchSharpSetup
{
    // Tests call TorchSharp directly, possibly before any Microsoft.ML.Peer type runs its own preparation.
    [ModuleInitializer]
    internal static void PrepareTorchSharp() => TorchSharpRuntime.EnsureLoadable();
}
