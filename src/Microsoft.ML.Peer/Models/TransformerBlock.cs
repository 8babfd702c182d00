using Microsoft.ML.Peer.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Microsoft.ML.Peer.Models;

/// <summary>Pre-norm transformer block: x + Attn(LN(x)), then + FFN(LN(x)), FFN being any feed-forward kind.</summary>
internal sealed class TransformerBlock : Module<Tensor, Tensor>
{
    private readonly LayerNorm attention_norm;
    private readonly SelfAttention attention;
    private readonly LayerNorm feed_forward_norm;
    private readonly Module<Tensor, Tensor> feed_forward;

    /// <param name="dimension">Model width d.</param>
    /// <param name="heads">Attention heads.</param>
    /// <param name="feedForward">The feed-forward module (dense, MoE, PKM or PEER); the block owns it.</param>
    /// <param name="causal">Causal attention (language model, default) or bidirectional (classifier).</param>
    public TransformerBlock(int dimension, int heads, Module<Tensor, Tensor> feedForward, bool causal = true)
        : base(nameof(TransformerBlock))
    {
        attention_norm = nn.LayerNorm(dimension);
        attention = new SelfAttention(dimension, heads, causal);
        feed_forward_norm = nn.LayerNorm(dimension);
        feed_forward = feedForward;
        RegisterComponents();
    }

    /// <summary>The feed-forward module of this block (dense, MoE, PKM or PEER).</summary>
    public Module<Tensor, Tensor> FeedForward => feed_forward;

    public override Tensor forward(Tensor x) => forward(x, null);

    /// <summary>
    /// x [B, T, d] → [B, T, d]. With <paramref name="tokenMask"/> [B, T] (bool, true = real token), padding is hidden
    /// from attention and the feed-forward runs on the real tokens only: a PEER or PKM query batch norm then
    /// gathers its training statistics from real tokens alone, and no expert is spent on padding. Padded positions
    /// come back unchanged by the feed-forward.
    /// </summary>
    public Tensor forward(Tensor x, Tensor? tokenMask)
    {
        using var scope = NewDisposeScope();
        var h = x + attention.forward(attention_norm.forward(x), tokenMask);
        var normed = feed_forward_norm.forward(h);
        if (tokenMask is null) return (h + feed_forward.forward(normed)).MoveToOuterDisposeScope();
        var flat = normed.reshape(-1, normed.shape[^1]);
        var real = tokenMask.reshape(-1).nonzero().squeeze(1);
        var update = zeros_like(flat).index_copy(0, real, feed_forward.forward(flat.index_select(0, real)));
        return (h + update.view(h.shape)).MoveToOuterDisposeScope();
    }

    /// <summary>Every product-key router (PEER and PKM layers) of <paramref name="blocks"/> with the index of its block.</summary>
    public static IEnumerable<(int Block, ProductKeyRouter Router)> ProductKeyRoutersOf(IEnumerable<TransformerBlock> blocks) =>
        blocks.Select((b, i) => (i, b.FeedForward switch
        {
            PeerLayer p => p.Router,
            ProductKeyMemory m => m.Router,
            _ => null,
        })).Where(t => t.Item2 is not null).Select(t => (t.i, t.Item2!));

    /// <summary>
    /// The names, as <paramref name="model"/>.named_parameters() gives them, of every PEER expert table and PKM value
    /// table below <paramref name="model"/>, in module order, with whether their gradients are sparse rows. The optimizer
    /// tells these tables apart by name: the Parameter wrappers of one tensor differ between accessors.
    /// </summary>
    public static IEnumerable<(string Name, bool Sparse)> ExpertTableNamesOf(Module model)
    {
        static string Full(string prefix, string name) => prefix.Length == 0 ? name : $"{prefix}.{name}";
        foreach (var (prefix, module) in model.named_modules())
        {
            if (module is PeerLayer p)
                foreach (var name in PeerLayer.ExpertTableNames) yield return (Full(prefix, name), p.Options.SparseGradients);
            else if (module is ProductKeyMemory m)
                yield return (Full(prefix, ProductKeyMemory.ValueTableName), m.SparseGradients);
        }
    }

    /// <summary>The expert/value tables of <paramref name="blocks"/>' PEER and PKM layers, with whether their gradients are sparse
    /// rows.</summary>
    public static IEnumerable<(Parameter Table, bool Sparse)> ExpertTablesOf(IEnumerable<TransformerBlock> blocks)
        => blocks.SelectMany(b => b.FeedForward switch
    {
        PeerLayer p => new[] { (p.DownWeights, p.Options.SparseGradients), (p.UpWeights, p.Options.SparseGradients) },
        ProductKeyMemory m => new[] { (m.Values, m.SparseGradients) },
        _ => Array.Empty<(Parameter, bool)>(),
    });

    /// <summary>The expert/value tables of <paramref name="blocks"/> whose gradients are sparse rows (PEER and PKM with SparseGradients
    /// on).</summary>
    public static IEnumerable<Parameter> SparseGradientTablesOf(IEnumerable<TransformerBlock> blocks) =>
        ExpertTablesOf(blocks).Where(t => t.Sparse).Select(t => t.Table);
}
