using Microsoft.ML.Peer.Native;
using Microsoft.ML.Peer.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Peer.Models;

/// <summary>
/// Transformer encoder text classifier: token + learned position embeddings, bidirectional pre-norm blocks
/// (dense, MoE, PKM or PEER feed-forward, as <see cref="TransformerOptions.FeedForward"/> picks) with padding
/// masked, a final LayerNorm, mean pooling over the real tokens and a linear head. With no blocks
/// (<see cref="TransformerOptions.Layers"/> = 0) it is a bag of embeddings whose mean passes through one pre-norm
/// residual feed-forward of the chosen kind before the head: PEER then retrieves its experts once per text instead of
/// once per token, which is what makes whole mails affordable on two CPU cores.
/// </summary>
/// <remarks>
/// Padding (<see cref="TextClassifierOptions.PaddingId"/>) changes nothing for a text: it is hidden from attention,
/// the feed-forward runs on real tokens only (so PEER's query batch norm never sees it) and the pooling skips it;
/// positions count from each text's first token. Position 0 always counts as real, so an empty text (all padding)
/// is scored as one padding token rather than as an undefined mean of nothing.
/// </remarks>
public sealed class TransformerTextClassifier : Module<Tensor, Tensor>
{
    private readonly TextClassifierOptions _options;
    private readonly Embedding token_embedding;
    private readonly Embedding position_embedding;
    private readonly ModuleList<TransformerBlock> blocks;
    private readonly LayerNorm final_norm;
    private readonly LayerNorm? pooled_norm;
    private readonly Module<Tensor, Tensor>? pooled_feed_forward;
    private readonly Linear head;

    public TransformerTextClassifier(TextClassifierOptions options) : base(TorchSharpRuntime.Prepared(nameof(TransformerTextClassifier)))
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options.Clone();
        int d = options.ModelDimension;
        token_embedding = nn.Embedding(options.VocabularySize, d);
        position_embedding = nn.Embedding(options.ContextLength, d);
        using (no_grad())
        {
            token_embedding.weight!.normal_(0, 0.02);
            position_embedding.weight!.normal_(0, 0.02);
        }
        blocks = nn.ModuleList(Enumerable.Range(0, options.Layers)
            .Select(i => new TransformerBlock(d, options.AttentionHeads, _options.CreateFeedForwardOfBlock(i), causal: false))
            .ToArray());
        final_norm = nn.LayerNorm(d);
        if (options.Layers == 0)
        {
            pooled_norm = nn.LayerNorm(d);
            pooled_feed_forward = _options.CreateFeedForward(_options.FeedForward);
        }
        head = nn.Linear(d, options.ClassCount);
        RegisterComponents();
    }

    public TextClassifierOptions Options => _options.Clone();

    /// <summary>The transformer blocks, in order.</summary>
    internal IReadOnlyList<TransformerBlock> Blocks => blocks.ToList();

    /// <summary>Every feed-forward of the model: the blocks' in order, or the one over the pooled vector when there are no blocks.</summary>
    private IEnumerable<Module<Tensor, Tensor>> FeedForwards =>
        pooled_feed_forward is not null ? new[] { pooled_feed_forward } : blocks.Select(b => b.FeedForward);

    /// <summary>Every product-key router (PEER and PKM layers) with the index of its block.</summary>
    /// <remarks>Without blocks, the feed-forward over the pooled text vector is reported as block 0.</remarks>
    public IEnumerable<(int Block, ProductKeyRouter Router)> ProductKeyRouters => pooled_feed_forward switch
    {
        PeerLayer p => new[] { (0, p.Router) },
        ProductKeyMemory m => new[] { (0, m.Router) },
        _ => TransformerBlock.ProductKeyRoutersOf(blocks),
    };

    /// <summary>The expert/value tables whose gradients are sparse rows (PEER and PKM with SparseGradients on).</summary>
    public IEnumerable<Parameter> SparseGradientTables() => pooled_feed_forward switch
    {
        PeerLayer p when p.Options.SparseGradients => new[] { p.DownWeights, p.UpWeights },
        ProductKeyMemory m when m.SparseGradients => new[] { m.Values },
        null => TransformerBlock.SparseGradientTablesOf(blocks),
        _ => Array.Empty<Parameter>(),
    };

    /// <summary>The names (as named_parameters() gives them) of every PEER/PKM expert or value table, with whether its gradients are sparse rows.</summary>
    internal IEnumerable<(string Name, bool Sparse)> ExpertTableNames() => TransformerBlock.ExpertTableNamesOf(this);

    /// <summary>Tokens [B, T] (int64, T ≤ context length, padded with PaddingId) → class logits [B, C].</summary>
    public override Tensor forward(Tensor tokens)
    {
        if (tokens.dim() != 2) throw new ArgumentException($"Tokens must have shape [batch, time]; got [{string.Join(", ", tokens.shape)}].", nameof(tokens));
        long time = tokens.shape[1];
        if (time > _options.ContextLength)
            throw new ArgumentException($"Sequence length {time} exceeds the model's context length {_options.ContextLength}; truncate the texts first.", nameof(tokens));
        using var scope = NewDisposeScope();
        var mask = tokens.ne(_options.PaddingId);
        if (training && _options.TokenDropout > 0)
            mask = mask.logical_and(rand(mask.shape, device: tokens.device).ge(_options.TokenDropout));
        mask.index_fill_(1, tensor(new long[] { 0 }, device: tokens.device), true);
        var positions = arange(time, dtype: ScalarType.Int64, device: tokens.device);
        var h = token_embedding.forward(tokens) + position_embedding.forward(positions);
        foreach (var block in blocks) h = block.forward(h, mask);
        h = final_norm.forward(h);
        var weights = mask.unsqueeze(-1).to(h.dtype);
        var pooled = (h * weights).sum(1) / weights.sum(1);
        if (pooled_feed_forward is not null) pooled = pooled + pooled_feed_forward.forward(pooled_norm!.forward(pooled));
        return head.forward(pooled).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Mean cross-entropy of the texts' <paramref name="labels"/> [B] (int64) plus, in training mode, the weighted
    /// auxiliary losses (MoE load balancing). Returns (total loss, cross-entropy alone, logits).
    /// </summary>
    public (Tensor Loss, Tensor CrossEntropy, Tensor Logits) Loss(Tensor tokens, Tensor labels)
    {
        using var scope = NewDisposeScope();
        var logits = forward(tokens);
        var crossEntropy = F.cross_entropy(logits, labels);
        var loss = crossEntropy;
        if (training)
        {
            if (_options.LabelSmoothing > 0) loss = F.cross_entropy(logits, labels, label_smoothing: _options.LabelSmoothing);
            foreach (var feedForward in FeedForwards)
                if (feedForward is IAuxiliaryLossSource { AuxiliaryLoss: { } aux })
                    loss = loss + aux * _options.MoeLoadBalancingWeight;
        }
        return (loss.MoveToOuterDisposeScope(), crossEntropy.MoveToOuterDisposeScope(), logits.MoveToOuterDisposeScope());
    }
}
