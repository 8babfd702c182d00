using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Peer.Models;

/// <summary>
/// Multi-head self-attention (fused scaled-dot-product kernel): causal for the language model, or bidirectional
/// (<c>causal: false</c>) with padding keys masked for the text classifier. One class, so both models share the
/// projections and kernel call.
/// </summary>
internal sealed class SelfAttention : Module<Tensor, Tensor>
{
    private readonly int _heads;
    private readonly bool _causal;
    private readonly Linear qkv;
    private readonly Linear output;

    /// <param name="dimension">Model width d.</param>
    /// <param name="heads">Attention heads; must divide d.</param>
    /// <param name="causal">True (default): token t attends to tokens ≤ t. False: every token attends to every (unmasked) token.</param>
    public SelfAttention(int dimension, int heads, bool causal = true) : base(nameof(SelfAttention))
    {
        _heads = heads;
        _causal = causal;
        qkv = nn.Linear(dimension, 3 * dimension);
        output = nn.Linear(dimension, dimension);
        RegisterComponents();
    }

    /// <summary>Whether token t attends to tokens ≤ t only.</summary>
    public bool IsCausal => _causal;

    /// <summary>x [B, T, d] → [B, T, d]; causal or bidirectional as constructed.</summary>
    public override Tensor forward(Tensor x) => forward(x, null);

    /// <summary>
    /// x [B, T, d] → [B, T, d]. <paramref name="keyMask"/> [B, T] (bool, true = a real token), when given, hides the
    /// false positions as keys, so padding cannot change what a real token sees; outputs at padded positions are
    /// meaningless and must be ignored by the caller.
    /// </summary>
    public Tensor forward(Tensor x, Tensor? keyMask)
    {
        using var scope = NewDisposeScope();
        long batch = x.shape[0], time = x.shape[1], dimension = x.shape[2];
        var parts = qkv.forward(x).view(batch, time, 3, _heads, dimension / _heads).permute(2, 0, 3, 1, 4);
        // A boolean mask [B, 1, 1, T] broadcasts over heads and queries: true marks keys that take part.
        var mask = keyMask?.view(batch, 1, 1, time);
        if (mask is not null && _causal) mask = mask.logical_and(ones(time, time, dtype: ScalarType.Bool, device: x.device).tril());
        var attended = F.scaled_dot_product_attention(parts[0], parts[1], parts[2], attn_mask: mask, is_casual: _causal && mask is null);
        var merged = attended.transpose(1, 2).reshape(batch, time, dimension);
        return output.forward(merged).MoveToOuterDisposeScope();
    }
}
