using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Native;
using Microsoft.ML.Peer.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Tests.Native;

/// <summary>The native fused kernels and the managed composed path must agree on outputs and every gradient.</summary>
[TestClass]
public sealed class NativeKernelEquivalenceTests
{
    private static PeerLayer Layer(PeerKernels kernels, bool sparse, ExpertActivation activation, int d)
    {
        manual_seed(21);   // same weights for both paths
        return new PeerLayer(d, new PeerOptions
        {
            Experts = 12 * 12, Heads = 3, TopK = 5, KeyDimension = 8, SparseGradients = sparse,
            ExpertActivation = activation, Kernels = kernels
        });
    }

    [TestMethod]
    public void NativeLibraryIsLoaded() =>
        Assert.IsTrue(PeerNativeLibrary.IsAvailable,
            $"libpeer_native should be built and copied next to the tests: {PeerNativeLibrary.UnavailableReason}");

    [TestMethod]
    public void HugePageAdviceKeepsTheTableAndSkipsWhatItCannotAdvise()
    {
        manual_seed(5);
        using var table = randn(4096, 1024);   // 16 MiB: whole 2 MiB pages at any alignment
        using var copy = table.clone();
        long advised = PeerNativeLibrary.AdviseHugePages(table);
        Assert.IsTrue(advised == 0 || (advised >= 14L << 20 && advised <= 16L << 20 && advised % (2L << 20) == 0),
            $"advised bytes are 0 (THP unavailable) or the whole 2 MiB pages of the table; got {advised}");
        if (File.Exists("/sys/kernel/mm/transparent_hugepage/enabled") &&
            !File.ReadAllText("/sys/kernel/mm/transparent_hugepage/enabled").Contains("[never]"))
            Assert.IsTrue(advised > 0, "transparent huge pages are allowed here, so the table should have been advised");
        Assert.IsTrue(table.eq(copy).all().item<bool>(), "the advice must not change the table");
        using var small = ones(16, 16);
        Assert.AreEqual(0L, PeerNativeLibrary.AdviseHugePages(small), "a table under 2 MiB holds no whole huge page");
        using var strided = table.t();
        Assert.AreEqual(0L, PeerNativeLibrary.AdviseHugePages(strided), "a non-contiguous view is not advised");
    }

    [TestMethod]
    [DataRow(false, ExpertActivation.Gelu, DisplayName = "dense gradients, GELU")]
    [DataRow(true, ExpertActivation.Gelu, DisplayName = "sparse gradients, GELU")]
    [DataRow(true, ExpertActivation.Relu, DisplayName = "sparse gradients, ReLU")]
    public void NativeAndManagedAgreeOnOutputsAndGradients(bool sparse, ExpertActivation activation)
    {
        const int d = 37, tokens = 23;
        using var managed = Layer(PeerKernels.Managed, sparse, activation, d);
        using var native = Layer(PeerKernels.Native, sparse, activation, d);
        manual_seed(4);
        using var input = randn(tokens, d);
        using var weights = randn(tokens, d);
        using var xManaged = input.clone().requires_grad_(true);
        using var xNative = input.clone().requires_grad_(true);

        using var yManaged = managed.forward(xManaged);
        using var yNative = native.forward(xNative);
        AssertClose(yManaged, yNative, "output");
        (yManaged * weights).sum().backward();
        (yNative * weights).sum().backward();

        AssertClose(xManaged.grad!, xNative.grad!, "dx");
        var managedParameters = managed.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, parameter) in native.named_parameters())
        {
            var a = managedParameters[name].grad;
            var b = parameter.grad;
            Assert.IsNotNull(a, $"{name}: managed gradient missing");
            Assert.IsNotNull(b, $"{name}: native gradient missing");
            Assert.AreEqual(a.is_sparse, b.is_sparse, $"{name}: gradient layout");
            AssertClose(a.is_sparse ? a.to_dense() : a, b.is_sparse ? b.to_dense() : b, name);
        }
    }

    [TestMethod]
    public void UniqueRowsMatchTorchUnique()
    {
        manual_seed(3);
        foreach (long experts in new long[] { 1, 64, 1000, 1 << 20 })
        {
            using var scope = NewDisposeScope();
            var indices = randint(experts, new long[] { 37, 12 }, dtype: ScalarType.Int64);
            var (rows, inverse) = FusedExpertFunction.UniqueRows(indices, experts);
            var (expectedRows, expectedInverse, _) = unique(indices.reshape(-1), sorted: true, return_inverse: true);
            Assert.IsTrue(rows.eq(expectedRows).all().item<bool>() && rows.shape[0] == expectedRows.shape[0], $"N = {experts}: rows");
            Assert.IsTrue(inverse.eq(expectedInverse!).all().item<bool>(), $"N = {experts}: inverse");
        }
        var empty = FusedExpertFunction.UniqueRows(zeros(0, 4, dtype: ScalarType.Int64), 10);
        Assert.AreEqual(0L, empty.Rows.shape[0]);
        var error = Assert.ThrowsExactly<ArgumentException>(() => FusedExpertFunction.UniqueRows(tensor(new long[] { 3, 10 }), 10));
        StringAssert.Contains(error.Message, "indices[1] = 10 is outside [0, N = 10)");
    }

    [TestMethod]
    public void SparseAdamWNativeAndManagedAgree()
    {
        manual_seed(8);
        using var start = randn(50, 13);
        using var tableNative = new TorchSharp.Modules.Parameter(start.clone());
        using var tableManaged = new TorchSharp.Modules.Parameter(start.clone());
        using var native = new SparseRowAdamW(new[] { tableNative }, 0.9, 0.95, 1e-8, 0.1, PeerKernels.Native);
        using var managed = new SparseRowAdamW(new[] { tableManaged }, 0.9, 0.95, 1e-8, 0.1, PeerKernels.Managed);
        for (int step = 0; step < 4; step++)
        {
            // Duplicate rows in an uncoalesced gradient, different rows each step.
            var rows = tensor(new long[] { step, 7, 7, 20 + step, 49 });
            var values = randn(5, 13);
            tableNative.grad = sparse_coo_tensor(rows.unsqueeze(0), values, new long[] { 50, 13 });
            tableManaged.grad = sparse_coo_tensor(rows.unsqueeze(0), values.clone(), new long[] { 50, 13 });
            native.Step(1e-2, 0.5);
            managed.Step(1e-2, 0.5);
        }
        AssertClose(tableManaged.detach(), tableNative.detach(), "table after 4 steps");
        Assert.IsTrue((tableNative.detach()[10] == start[10]).all().item<bool>(), "untouched row 10 must not move");
        Assert.IsFalse((tableNative.detach()[7] == start[7]).all().item<bool>(), "touched row 7 must move");
    }

    [TestMethod]
    public void MissingLibraryFallsBackWithOneWarning()
    {
        var warnings = new List<string>();
        var (available, reason) = PeerNativeLibrary.Decide(
            () => throw new DllNotFoundException("libpeer_native.so: cannot open shared object file"), null, warnings.Add);
        Assert.IsFalse(available);
        Assert.AreEqual(1, warnings.Count);
        StringAssert.Contains(warnings[0], "managed PEER kernels");
        StringAssert.Contains(reason, "libpeer_native");

        warnings.Clear();
        (available, _) = PeerNativeLibrary.Decide(() => 99, null, warnings.Add);
        Assert.IsFalse(available, "a library of another ABI version must not be used");
        StringAssert.Contains(warnings.Single(), "ABI version 99");

        warnings.Clear();
        (available, _) = PeerNativeLibrary.Decide(() => PeerNativeLibrary.ExpectedAbiVersion, "0", warnings.Add);
        Assert.IsFalse(available, "PEER_NATIVE=0 turns the native kernels off");

        warnings.Clear();
        int loads = 0;
        (available, reason) =
            PeerNativeLibrary.Decide(() => { loads++; return PeerNativeLibrary.ExpectedAbiVersion; }, null, warnings.Add, "AVX2, FMA");
        Assert.IsFalse(available, "a CPU without x86-64-v3 must not run the library built for it");
        Assert.AreEqual(0, loads, "the library must not even be loaded on such a CPU");
        StringAssert.Contains(reason, "AVX2, FMA");
        Assert.AreEqual(1, warnings.Count);
    }

    [TestMethod]
    public void ThisCpuRunsTheShippedLibrary()
    {
        // The CI and development machines have x86-64-v3; the check itself must not refuse them.
        Assert.AreEqual("", PeerNativeLibrary.MissingCpuFeatures());
        Assert.IsTrue(PeerNativeLibrary.IsAvailable, PeerNativeLibrary.UnavailableReason);
    }

    [TestMethod]
    public void NativeKernelsRejectBadIndicesWithAClearError()
    {
        using var layer = Layer(PeerKernels.Native, sparse: false, ExpertActivation.Gelu, 16);
        var indices = tensor(Enumerable.Range(0, 30).Select(i => i == 3 ? 144L : i).ToArray()).view(2, 15);   // 144 = N is out of range
        var e = Assert.Throws<ArgumentException>(() =>
            FusedExpertFunction.Apply(randn(2, 16), softmax(randn(2, 15), -1), indices, layer.DownWeights, layer.UpWeights,
                ExpertActivation.Gelu, false));
        StringAssert.Contains(e.Message, "peer_expert_forward_f32");
    }

    private static void AssertClose(Tensor expected, Tensor actual, string what)
    {
        double scale = Math.Max(1.0, expected.abs().max().item<float>());
        double difference = (expected - actual).abs().max().item<float>();
        Assert.IsTrue(difference <= 1e-5 * scale, $"{what}: max |managed − native| = {difference:E2} (scale {scale:F3})");
    }
}
