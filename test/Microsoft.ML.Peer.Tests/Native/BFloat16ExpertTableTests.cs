using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Native;
using Microsoft.ML.Peer.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Tests.Native;

/// <summary>
/// Expert tables stored in bfloat16: the native and managed paths agree, the bf16 layer is the fp32 layer on rounded
/// weights, and the row-sparse AdamW keeps updates below bf16's resolution by rounding stochastically.
/// </summary>
[TestClass]
public sealed class BFloat16ExpertTableTests
{
    private static PeerLayer Layer(PeerKernels kernels, ExpertTablePrecision precision, ExpertActivation activation = ExpertActivation.Gelu,
        int d = 37)
    {
        manual_seed(21);   // same weights for every path
        return new PeerLayer(d, new PeerOptions
        {
            Experts = 12 * 12, Heads = 3, TopK = 5, KeyDimension = 8, SparseGradients = true,
            ExpertActivation = activation, Kernels = kernels, ExpertTablePrecision = precision,
        });
    }

    private static (Tensor Y, Tensor Dx, Dictionary<string, Tensor> Grads) Run(PeerLayer layer, int seed = 4, int d = 37, int tokens = 23)
    {
        manual_seed(seed);
        var x = randn(tokens, d).requires_grad_(true);
        var weights = randn(tokens, d);
        var y = layer.forward(x);
        (y * weights).sum().backward();
        var grads = layer.named_parameters().ToDictionary(p => p.name,
            p => (p.parameter.grad!.is_sparse ? p.parameter.grad!.to_dense() : p.parameter.grad!).to(ScalarType.Float32));
        return (y.detach(), x.grad!, grads);
    }

    private static double MaxDifference(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    private static double Scale(Tensor t) => Math.Max(1.0, t.abs().max().item<float>());

    [TestMethod]
    public void TablesAreStoredInBFloat16AsRoundedFloat32Weights()
    {
        using var fp32 = Layer(PeerKernels.Native, ExpertTablePrecision.Float32);
        using var bf16 = Layer(PeerKernels.Native, ExpertTablePrecision.BFloat16);
        Assert.AreEqual(ScalarType.BFloat16, bf16.DownWeights.dtype);
        Assert.AreEqual(ScalarType.BFloat16, bf16.UpWeights.dtype);
        // The same seed draws the same weights; bf16 holds them rounded to nearest.
        Assert.IsTrue(fp32.DownWeights.to(ScalarType.BFloat16).eq(bf16.DownWeights).all().item<bool>());
        Assert.IsTrue(fp32.UpWeights.to(ScalarType.BFloat16).eq(bf16.UpWeights).all().item<bool>());
        Assert.AreEqual(fp32.Router.parameters().Count(), bf16.Router.parameters().Count());
        Assert.IsTrue(bf16.Router.parameters().All(p => p.dtype == ScalarType.Float32), "only the expert tables are bf16");
    }

    [TestMethod]
    [DataRow(ExpertActivation.Gelu)]
    [DataRow(ExpertActivation.Relu)]
    public void NativeAndManagedAgreeOnBFloat16Tables(ExpertActivation activation)
    {
        using var managed = Layer(PeerKernels.Managed, ExpertTablePrecision.BFloat16, activation);
        using var native = Layer(PeerKernels.Native, ExpertTablePrecision.BFloat16, activation);
        Assert.IsTrue(native.UsesNativeKernels(zeros(1, 37)));
        var m = Run(managed);
        var n = Run(native);
        // Both widen the same bf16 rows and compute in fp32.
        Assert.IsTrue(MaxDifference(m.Y, n.Y) <= 1e-5 * Scale(m.Y), $"output: {MaxDifference(m.Y, n.Y):E2}");
        Assert.IsTrue(MaxDifference(m.Dx, n.Dx) <= 1e-5 * Scale(m.Dx), $"dx: {MaxDifference(m.Dx, n.Dx):E2}");
        foreach (var (name, grad) in n.Grads)
        {
            // The composed path's table gradients come back from autograd in the table's type (bf16: 8 significant bits);
            // the native kernels give them in fp32.
            double tolerance = PeerLayer.ExpertTableNames.Contains(name) ? 2e-2 : 1e-5;
            double difference = MaxDifference(m.Grads[name], grad);
            Assert.IsTrue(difference <= tolerance * Scale(grad), $"{name}: max |managed − native| = {difference:E2}");
        }
    }

    [TestMethod]
    public void BFloat16LayerIsTheFloat32LayerOnRoundedWeights()
    {
        using var fp32 = Layer(PeerKernels.Native, ExpertTablePrecision.Float32);
        using var bf16 = Layer(PeerKernels.Native, ExpertTablePrecision.BFloat16);
        var original = Run(fp32);
        var rounded = Run(bf16);
        // Against the fp32 weights: within the rounding of the tables (relative 2^-9 per weight); measured 1.5e-3 (y) and
        // 2.1e-3 (dx) of the scale here.
        double dy = MaxDifference(original.Y, rounded.Y), dx = MaxDifference(original.Dx, rounded.Dx);
        Assert.IsTrue(dy <= 1e-2 * Scale(original.Y), $"output differs by {dy:E2} from the fp32 layer's");
        Assert.IsTrue(dx <= 1e-2 * Scale(original.Dx), $"dx differs by {dx:E2} from the fp32 layer's");
        Assert.IsTrue(dy > 0, "the tables were rounded, so something must differ");

        // On the same (bf16-representable) weights the two are the same computation, bit for bit.
        using (no_grad())
        {
            fp32.DownWeights.copy_(bf16.DownWeights);
            fp32.UpWeights.copy_(bf16.UpWeights);
        }
        foreach (var p in fp32.parameters()) p.grad = null;
        var widened = Run(fp32);
        Assert.IsTrue(widened.Y.eq(rounded.Y).all().item<bool>(), "output on widened tables");
        Assert.IsTrue(widened.Dx.eq(rounded.Dx).all().item<bool>(), "dx on widened tables");
        foreach (var (name, grad) in rounded.Grads)
            Assert.IsTrue(widened.Grads[name].eq(grad).all().item<bool>(), $"{name} on widened tables");
    }

    [TestMethod]
    [DataRow(PeerKernels.Native)]
    [DataRow(PeerKernels.Managed)]
    public void OneStepIsWithinOneBFloat16SpacingOfTheFloat32Step(PeerKernels kernels)
    {
        manual_seed(8);
        using var start = randn(50, 13).to(ScalarType.BFloat16);
        using var table16 = new Parameter(start.clone());
        using var table32 = new Parameter(start.to(ScalarType.Float32));
        using var adam16 = new SparseRowAdamW(new[] { table16 }, 0.9, 0.95, 1e-8, 0.1, kernels, seed: 3);
        using var adam32 = new SparseRowAdamW(new[] { table32 }, 0.9, 0.95, 1e-8, 0.1, kernels);
        var rows = tensor(new long[] { 0, 7, 7, 20, 49 });
        var values = randn(5, 13);
        table16.grad = sparse_coo_tensor(rows.unsqueeze(0), values, new long[] { 50, 13 });
        table32.grad = sparse_coo_tensor(rows.unsqueeze(0), values.clone(), new long[] { 50, 13 });
        adam16.Step(1e-2, 0.5);
        adam32.Step(1e-2, 0.5);
        var (m16, v16) = adam16.Moments(0);
        var (m32, v32) = adam32.Moments(0);
        Assert.AreEqual(ScalarType.BFloat16, m16.dtype);
        foreach (var (low, exact, what) in new[] { (table16.detach(), table32.detach(), "weights"), (m16, m32, "first moment"),
            (v16, v32, "second moment") })
        {
            // The spacing of bf16 values at |exact|: 2^(e - 7) for |exact| in [2^e, 2^(e+1)).
            var spacing = pow(2.0, exact.abs().clamp_min(1e-30).log2().floor() - 7);
            var error = (low.to(ScalarType.Float32) - exact).abs();
            Assert.IsTrue(error.le(spacing).all().item<bool>(), $"{what}: more than one bf16 step from fp32 ({error.max().item<float>():E2})");
        }
        Assert.IsTrue(table16.detach()[10].eq(start[10]).all().item<bool>(), "untouched row 10 must not move");
    }

    [TestMethod]
    [DataRow(PeerKernels.Native)]
    [DataRow(PeerKernels.Managed)]
    public void UpdatesBelowBFloat16ResolutionAreKeptOnAverage(PeerKernels kernels)
    {
        // Steps of about lr = 1e-4 on weights near 1, where bf16 values are 2^-8 apart: rounding to nearest would never move
        // them; stochastic rounding moves them by the fp32 amount on average.
        using var table16 = new Parameter(ones(64, 256, dtype: ScalarType.BFloat16));
        using var table32 = new Parameter(ones(64, 256));
        using var adam16 = new SparseRowAdamW(new[] { table16 }, 0.9, 0.95, 1e-8, 0, kernels, seed: 11);
        using var adam32 = new SparseRowAdamW(new[] { table32 }, 0.9, 0.95, 1e-8, 0, kernels);
        var rows = arange(64L);
        for (int step = 0; step < 40; step++)
        {
            using var scope = NewDisposeScope();
            var grads = ones(64, 256);
            table16.grad = sparse_coo_tensor(rows.unsqueeze(0), grads, new long[] { 64, 256 });
            table32.grad = sparse_coo_tensor(rows.unsqueeze(0), grads.clone(), new long[] { 64, 256 });
            adam16.Step(1e-4);
            adam32.Step(1e-4);
        }
        double moved32 = 1 - table32.detach().mean().item<float>();
        double moved16 = 1 - table16.detach().to(ScalarType.Float32).mean().item<float>();
        Assert.IsTrue(moved32 > 3e-3, $"fp32 weights should have moved about 40 × 1e-4; moved {moved32:E3}");
        Assert.IsTrue(Math.Abs(moved16 - moved32) <= 0.05 * moved32, $"bf16 moved {moved16:E4} on average, fp32 {moved32:E4}");
    }

    [TestMethod]
    public void StochasticRoundingIsUnbiasedAndLandsOnANeighbour()
    {
        using var generator = new Generator(5);
        // 1 + 0.3 steps of 2^-7 (the spacing in [1, 2)), its negative, a value in a small binade, and zero.
        var cases = new[] { 1 + 0.3 * Math.Pow(2, -7), -(1 + 0.3 * Math.Pow(2, -7)), 3.7e-5, 0.0 };
        foreach (double value in cases)
        {
            using var scope = NewDisposeScope();
            var x = full(20000, value, dtype: ScalarType.Float32);
            var rounded = SparseRowAdamW.StochasticRoundToBFloat16(x, generator).to(ScalarType.Float64);
            var lower = x.to(ScalarType.BFloat16).to(ScalarType.Float64);
            var distinct = unique(rounded).Item1;
            Assert.IsTrue(distinct.shape[0] <= 2, $"{value}: results must be the two bf16 neighbours");
            double mean = rounded.mean().item<double>();
            double spread = rounded.std().item<double>() / Math.Sqrt(20000);
            Assert.IsTrue(Math.Abs(mean - value) <= 4 * spread + 1e-12 * Math.Abs(value),
                $"{value}: mean of stochastic roundings {mean} (standard error {spread:E2})");
        }
        using var special = tensor(new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity });
        var kept = SparseRowAdamW.StochasticRoundToBFloat16(special, generator).to(ScalarType.Float32).data<float>().ToArray();
        Assert.IsTrue(float.IsNaN(kept[0]) && float.IsPositiveInfinity(kept[1]) && float.IsNegativeInfinity(kept[2]));
    }

    [TestMethod]
    public void TheRowSparseOptimizerRefusesTablesOfOtherTypes()
    {
        using var table = new Parameter(zeros(4, 3, dtype: ScalarType.Float64));
        var error = Assert.ThrowsExactly<ArgumentException>(() => new SparseRowAdamW(new[] { table }));
        StringAssert.Contains(error.Message, "float32 or bfloat16");
        StringAssert.Contains(error.Message, "Float64");
    }

    [TestMethod]
    public void BFloat16NeedsSparseGradients()
    {
        var options = new PeerOptions { Experts = 16, Heads = 1, TopK = 2, KeyDimension = 4, ExpertTablePrecision = ExpertTablePrecision.BFloat16 };
        var error = Assert.ThrowsExactly<ArgumentException>(() => options.Validate());
        Assert.AreEqual(nameof(PeerOptions.ExpertTablePrecision), error.ParamName);
        StringAssert.Contains(error.Message, nameof(PeerOptions.SparseGradients));
        options.SparseGradients = true;
        options.Validate();
    }
}
