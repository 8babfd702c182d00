using System.Numerics;
using System.Runtime.Intrinsics.X86;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Benchmarks;

/// <summary>
/// The ceiling of the expert forward's memory access pattern on this machine: read the same u and v rows the kernel
/// reads (the same indices, the same tables, one thread per core, rows of a later slot prefetched) and do nothing but
/// add them up. The kernel cannot read faster than this; comparing the two separates the kernel's own cost from what
/// random 1 KB row reads cost here, which a sequential stream test does not show.
/// </summary>
internal static class RandomRowReadProbe
{
    private const int PrefetchSlots = 4;

    /// <summary>Reads every row indices[t, j] of <paramref name="down"/> and <paramref name="up"/>; returns a checksum so the reads cannot
    /// be elided.</summary>
    public static unsafe float Read(Tensor indices, Tensor down, Tensor up)
    {
        if (!indices.is_contiguous() || !down.is_contiguous() || !up.is_contiguous())
            throw new ArgumentException("The probe needs contiguous tensors.");
        long slots = indices.numel(), d = down.shape[1];
        var idx = (long*)NativeExpertKernel.TensorData(indices.Handle);
        var u = (float*)NativeExpertKernel.TensorData(down.Handle);
        var v = (float*)NativeExpertKernel.TensorData(up.Handle);
        int workers = Math.Max(1, Environment.ProcessorCount);
        var partial = new float[workers];
        Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, w =>
        {
            long lo = slots * w / workers, hi = slots * (w + 1) / workers;
            var acc = Vector<float>.Zero;
            for (long s = lo; s < hi; s++)
            {
                if (Sse.IsSupported && s + PrefetchSlots < hi)
                {
                    long next = idx[s + PrefetchSlots];
                    for (long o = 0; o < d; o += 16) { Sse.Prefetch0(u + next * d + o); Sse.Prefetch0(v + next * d + o); }
                }
                long e = idx[s];
                float* ur = u + e * d, vr = v + e * d;
                for (long o = 0; o + Vector<float>.Count <= d; o += Vector<float>.Count)
                    acc += *(Vector<float>*)(ur + o) + *(Vector<float>*)(vr + o);
            }
            partial[w] = Vector.Sum(acc);
        });
        return partial.Sum();
    }
}
