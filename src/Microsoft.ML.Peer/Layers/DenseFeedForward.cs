using Microsoft.ML.Peer.Native;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Peer.Layers;

/// <summary>The transformer's usual feed-forward block: W2 GELU(W1 x).</summary>
public sealed class DenseFeedForward : Module<Tensor, Tensor>
{
    private readonly Linear up;
    private readonly Linear down;

    public DenseFeedForward(int dimension, int hiddenDimension) : base(TorchSharpRuntime.Prepared(nameof(DenseFeedForward)))
    {
        if (dimension <= 0) throw new ArgumentOutOfRangeException(nameof(dimension), dimension, "The model dimension must be positive.");
        if (hiddenDimension <= 0)
            throw new ArgumentOutOfRangeException(nameof(hiddenDimension), hiddenDimension, "The hidden dimension must be positive.");
        up = nn.Linear(dimension, hiddenDimension);
        down = nn.Linear(hiddenDimension, dimension);
        RegisterComponents();
    }

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        return down.forward(F.gelu(up.forward(input))).MoveToOuterDisposeScope();
    }
}
