using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Microsoft.ML.Peer.Models;

/// <summary>Pre-norm transformer block: x + Attn(LN(x)), then + FFN(LN(x)), FFN being any feed-forward kind.</summary>
public sealed class TransformerBlock : Module<Tensor, Tensor>
{
    private readonly LayerNorm attention_norm;
    private readonly CausalSelfAttention attention;
    private readonly LayerNorm feed_forward_norm;
    private readonly Module<Tensor, Tensor> feed_forward;

    public TransformerBlock(int dimension, int heads, Module<Tensor, Tensor> feedForward) : base(nameof(TransformerBlock))
    {
        attention_norm = nn.LayerNorm(dimension);
        attention = new CausalSelfAttention(dimension, heads);
        feed_forward_norm = nn.LayerNorm(dimension);
        feed_forward = feedForward;
        RegisterComponents();
    }

    /// <summary>The feed-forward module of this block (dense, MoE, PKM or PEER).</summary>
    public Module<Tensor, Tensor> FeedForward => feed_forward;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x + attention.forward(attention_norm.forward(x));
        return (h + feed_forward.forward(feed_forward_norm.forward(h))).MoveToOuterDisposeScope();
    }
}
