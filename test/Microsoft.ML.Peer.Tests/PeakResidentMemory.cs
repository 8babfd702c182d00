namespace Microsoft.ML.Peer.Tests;

/// <summary>Linux peak resident set size (VmHWM), resettable through /proc/self/clear_refs.</summary>
internal static class PeakResidentMemory
{
    /// <summary>Resets the peak to the current RSS and returns the current RSS in bytes.</summary>
    public static long ResetAndRead()
    {
        File.WriteAllText("/proc/self/clear_refs", "5");
        return Read("VmRSS:");
    }

    /// <summary>
    /// Collects the managed heap and hands glibc's free pages back to the kernel (malloc_trim), so that the next
    /// measurement sees what an operation allocates rather than memory that earlier tests freed and the process kept.
    /// </summary>
    public static void ReleaseFreedMemory()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        malloc_trim(0);
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "malloc_trim")]
    private static extern int malloc_trim(nuint pad);

    /// <summary>The peak RSS in bytes since the last reset.</summary>
    public static long Peak() => Read("VmHWM:");

    private static long Read(string field)
    {
        var line = File.ReadLines("/proc/self/status").First(l => l.StartsWith(field, StringComparison.Ordinal));
        return long.Parse(line[field.Length..].Trim().Split(' ')[0]) * 1024;
    }
}
