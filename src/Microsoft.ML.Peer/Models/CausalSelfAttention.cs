using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Peer.Models;

/// <summary>Multi-head causal self-attention (fused scaled-dot-product kernel).</summary>
public sealed class CausalSelfAttention : Module<Tensor, Tensor>
{
    private readonly int _heads;
    private readonly Linear qkv;
    private readonly Linear output;

    public CausalSelfAttention(int dimension, int heads) : base(nameof(CausalSelfAttention))
    {
        _heads = heads;
        qkv = nn.Linear(dimension, 3 * dimension);
        output = nn.Linear(dimension, dimension);
        RegisterComponents();
    }

    /// <summary>x [B, T, d] → [B, T, d]; token t attends to tokens ≤ t only.</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long batch = x.shape[0], time = x.shape[1], dimension = x.shape[2];
        var parts = qkv.forward(x).view(batch, time, 3, _heads, dimension / _heads).permute(2, 0, 3, 1, 4);
        var attended = F.scaled_dot_product_attention(parts[0], parts[1], parts[2], is_casual: true);
        var merged = attended.transpose(1, 2).reshape(batch, time, dimension);
        return output.forward(merged).MoveToOuterDisposeScope();
    }
}
