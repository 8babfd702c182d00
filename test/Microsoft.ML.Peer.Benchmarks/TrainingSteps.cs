using Microsoft.ML.Peer.Native;
using System.Diagnostics;
using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Benchmarks;

/// <summary>Wall time of one training step and of its three phases, in milliseconds.</summary>
internal readonly record struct StepTimes(double Forward, double Backward, double Optimizer)
{
    public double Total => Forward + Backward + Optimizer;
}

/// <summary>A layer and its optimizers, stepped on the loss (y·w).sum() for fixed x and w.</summary>
internal interface ITrainingStep : IDisposable
{
    string Name { get; }
    StepTimes Run(Tensor x, Tensor w);
}

/// <summary>
/// One PEER layer training step: forward, backward, row-sparse AdamW on the two expert tables and torch AdamW on the
/// router (query projection, batch norm, sub-keys).
/// </summary>
internal sealed class PeerTrainingStep : ITrainingStep
{
    public const double LearningRate = 1e-3;
    public const double WeightDecay = 0.1;

    private readonly AdamW _routerOptimizer;
    private readonly SparseRowAdamW _tableOptimizer;

    public PeerTrainingStep(string name, BenchmarkSettings settings, PeerKernels kernels,
        ExpertTablePrecision precision = ExpertTablePrecision.Float32)
    {
        Name = name;
        Kernels = kernels;
        Layer = new PeerLayer(settings.Dimension, new PeerOptions
        {
            Experts = settings.Experts,
            Heads = settings.Heads,
            TopK = settings.TopK,
            KeyDimension = settings.KeyDimension,
            SparseGradients = true,
            Kernels = kernels,
            ExpertTablePrecision = precision,
        });
        Layer.train();
        // The tables and the router are the layer's only parameters; each goes to exactly one optimizer.
        int routerCount = Layer.Router.parameters().Count();
        if (Layer.parameters().Count() != routerCount + 2)
            throw new InvalidOperationException(
                "PeerLayer has parameters outside its router and two expert tables; the benchmark would not train them.");
        _routerOptimizer = optim.AdamW(Layer.Router.parameters(), lr: LearningRate, weight_decay: WeightDecay);
        _tableOptimizer = new SparseRowAdamW(new[] { Layer.DownWeights, Layer.UpWeights }, 0.9, 0.999, 1e-8, WeightDecay, kernels);
    }

    public string Name { get; }

    public PeerKernels Kernels { get; }

    public PeerLayer Layer { get; }

    public long ParameterBytes => Layer.parameters().Sum(p => p.numel() * p.element_size());

    public StepTimes Run(Tensor x, Tensor w)
    {
        using var scope = NewDisposeScope();
        _routerOptimizer.zero_grad();
        _tableOptimizer.ZeroGrad();
        long start = Stopwatch.GetTimestamp();
        var y = Layer.forward(x);
        long forward = Stopwatch.GetTimestamp();
        (y * w).sum().backward();
        long backward = Stopwatch.GetTimestamp();
        _routerOptimizer.step();
        _tableOptimizer.Step(LearningRate);
        long end = Stopwatch.GetTimestamp();
        return new StepTimes(Samples.Milliseconds(start, forward), Samples.Milliseconds(forward, backward),
            Samples.Milliseconds(backward, end));
    }

    /// <summary>Router forward alone (projection, batch norm, product-key retrieval, softmax) with autograd on, as in a step.</summary>
    public double RouterForward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long start = Stopwatch.GetTimestamp();
        var (gates, indices) = Layer.Router.forward(x);
        long end = Stopwatch.GetTimestamp();
        return Samples.Milliseconds(start, end);
    }

    /// <summary>Router backward alone: the router's forward (untimed), then the backward of (gates·r).sum() for a fixed r.</summary>
    public double RouterBackward(Tensor x, Tensor r)
    {
        using var scope = NewDisposeScope();
        _routerOptimizer.zero_grad();
        var (gates, _) = Layer.Router.forward(x);
        var loss = (gates.reshape(r.shape) * r).sum();
        long start = Stopwatch.GetTimestamp();
        loss.backward();
        long end = Stopwatch.GetTimestamp();
        _routerOptimizer.zero_grad();
        return Samples.Milliseconds(start, end);
    }

    public void Dispose()
    {
        _tableOptimizer.Dispose();
        _routerOptimizer.Dispose();
        Layer.Dispose();
    }
}

/// <summary>One DenseFeedForward training step with torch AdamW on all its parameters.</summary>
internal sealed class DenseTrainingStep : ITrainingStep
{
    private readonly DenseFeedForward _layer;
    private readonly AdamW _optimizer;

    public DenseTrainingStep(string name, int dimension, int hidden)
    {
        Name = name;
        Hidden = hidden;
        _layer = new DenseFeedForward(dimension, hidden);
        _layer.train();
        _optimizer = optim.AdamW(_layer.parameters(), lr: PeerTrainingStep.LearningRate, weight_decay: PeerTrainingStep.WeightDecay);
    }

    public string Name { get; }

    public int Hidden { get; }

    public StepTimes Run(Tensor x, Tensor w)
    {
        using var scope = NewDisposeScope();
        _optimizer.zero_grad();
        long start = Stopwatch.GetTimestamp();
        var y = _layer.forward(x);
        long forward = Stopwatch.GetTimestamp();
        (y * w).sum().backward();
        long backward = Stopwatch.GetTimestamp();
        _optimizer.step();
        long end = Stopwatch.GetTimestamp();
        return new StepTimes(Samples.Milliseconds(start, forward), Samples.Milliseconds(forward, backward),
            Samples.Milliseconds(backward, end));
    }

    public void Dispose()
    {
        _optimizer.Dispose();
        _layer.Dispose();
    }
}

/// <summary>Samples of a step's total and phases.</summary>
internal sealed class StepSamples
{
    public StepSamples(string name)
    {
        Step = new Samples(name);
        Forward = new Samples($"  {name}: forward");
        Backward = new Samples($"  {name}: loss + backward");
        Optimizer = new Samples($"  {name}: optimizer");
    }

    public Samples Step { get; }
    public Samples Forward { get; }
    public Samples Backward { get; }
    public Samples Optimizer { get; }

    public void Add(StepTimes times)
    {
        Step.Add(times.Total);
        Forward.Add(times.Forward);
        Backward.Add(times.Backward);
        Optimizer.Add(times.Optimizer);
    }
}
