using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Native;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Microsoft.ML.Peer.Models;

/// <summary>
/// What the language model and the text classifier share: token and learned position embeddings, the pre-norm blocks
/// (causal or bidirectional self-attention, each block's feed-forward of the kind its options pick), the final LayerNorm,
/// and the auxiliary losses of the feed-forwards. Each model adds its head on top.
/// </summary>
/// <typeparam name="TOptions">The model's options.</typeparam>
public abstract class TransformerModel<TOptions> : Module<Tensor, Tensor> where TOptions : TransformerOptions
{
    private readonly TOptions _options;
    private readonly Embedding token_embedding;
    private readonly Embedding position_embedding;
    private readonly ModuleList<TransformerBlock> blocks;
    private readonly LayerNorm final_norm;

    /// <param name="name">The module's name.</param>
    /// <param name="options">Validated by <paramref name="validate"/> and copied, so the model owns its settings.</param>
    /// <param name="validate">The options' own check (each options type validates its extra settings).</param>
    /// <param name="clone">The options' deep copy.</param>
    /// <param name="causal">Causal attention (language model) or bidirectional (classifier).</param>
    private protected TransformerModel(string name, TOptions options, Action<TOptions> validate, Func<TOptions, TOptions> clone,
        bool causal)
        : base(TorchSharpRuntime.Prepared(name))
    {
        ArgumentNullException.ThrowIfNull(options);
        validate(options);
        _options = clone(options);
        int d = options.ModelDimension;
        token_embedding = nn.Embedding(options.VocabularySize, d);
        position_embedding = nn.Embedding(options.ContextLength, d);
        using (no_grad())
        {
            token_embedding.weight!.normal_(0, 0.02);
            position_embedding.weight!.normal_(0, 0.02);
        }
        blocks = nn.ModuleList(Enumerable.Range(0, options.Layers)
            .Select(i => new TransformerBlock(d, options.AttentionHeads, _options.CreateFeedForwardOfBlock(i), causal))
            .ToArray());
        final_norm = nn.LayerNorm(d);
        // Registered here, before the derived model's own modules, so parameter names and order are those of one class.
        register_module(nameof(token_embedding), token_embedding);
        register_module(nameof(position_embedding), position_embedding);
        register_module(nameof(blocks), blocks);
        register_module(nameof(final_norm), final_norm);
    }

    /// <summary>The model's settings (the model's own copy; read, do not change).</summary>
    private protected TOptions Settings => _options;

    /// <summary>The transformer blocks, in order.</summary>
    internal IReadOnlyList<TransformerBlock> Blocks => blocks.ToList();

    /// <summary>Every feed-forward of the model whose auxiliary loss counts: the blocks' by default.</summary>
    private protected virtual IEnumerable<Module<Tensor, Tensor>> FeedForwards => blocks.Select(b => b.FeedForward);

    /// <summary>Every product-key router (PEER and PKM layers) with the index of its block.</summary>
    public virtual IEnumerable<(int Block, ProductKeyRouter Router)> ProductKeyRouters => TransformerBlock.ProductKeyRoutersOf(blocks);

    /// <summary>The expert/value tables whose gradients are sparse rows (PEER and PKM with SparseGradients on).</summary>
    public virtual IEnumerable<Parameter> SparseGradientTables() => TransformerBlock.SparseGradientTablesOf(blocks);

    /// <summary>The names (as named_parameters() gives them) of every PEER/PKM expert or value table, with whether its gradients are sparse
    /// rows.</summary>
    internal IEnumerable<(string Name, bool Sparse)> ExpertTableNames() => TransformerBlock.ExpertTableNamesOf(this);

    /// <summary>The token embedding table [V, d] (the language model ties its output projection to it).</summary>
    private protected Parameter TokenEmbeddingWeight => token_embedding.weight!;

    /// <summary>
    /// Tokens [B, T] → the final LayerNorm's output [B, T, d]: embeddings, then every block (with <paramref name="tokenMask"/>
    /// [B, T], true = a real token, padding is hidden from attention and the feed-forward).
    /// </summary>
    /// <param name="tokens">Token ids [B, T], int64, T ≤ the context length.</param>
    /// <param name="tokenMask">Null (every token is real) or the real tokens.</param>
    /// <param name="tooLongHint">Appended to the error of a sequence longer than the context.</param>
    private protected Tensor Encode(Tensor tokens, Tensor? tokenMask, string tooLongHint = "")
    {
        CheckTokens(tokens, tooLongHint);
        long time = tokens.shape[1];
        using var scope = NewDisposeScope();
        var positions = arange(time, dtype: ScalarType.Int64, device: tokens.device);
        var h = token_embedding.forward(tokens) + position_embedding.forward(positions);
        foreach (var block in blocks) h = block.forward(h, tokenMask);
        return final_norm.forward(h).MoveToOuterDisposeScope();
    }

    /// <summary>Throws unless <paramref name="tokens"/> is [batch, time] with time ≤ <paramref name="maxLength"/> (the context
    /// length when null), which the message calls the model's <paramref name="lengthName"/> length.</summary>
    private protected void CheckTokens(Tensor tokens, string tooLongHint = "", int? maxLength = null, string lengthName = "context")
    {
        if (tokens.dim() != 2)
            throw new ArgumentException($"Tokens must have shape [batch, time]; got [{string.Join(", ", tokens.shape)}].", nameof(tokens));
        long time = tokens.shape[1], most = maxLength ?? _options.ContextLength;
        if (time > most)
            throw new ArgumentException($"Sequence length {time} exceeds the model's {lengthName} length {most}{tooLongHint}.", nameof(tokens));
    }

    /// <summary>
    /// <paramref name="loss"/> plus, in training mode, each feed-forward's auxiliary loss (MoE load balancing) at
    /// <see cref="TransformerOptions.MoeLoadBalancingWeight"/>.
    /// </summary>
    private protected Tensor WithAuxiliaryLosses(Tensor loss)
    {
        if (!training) return loss;
        foreach (var feedForward in FeedForwards)
            if (feedForward is IAuxiliaryLossSource { AuxiliaryLoss: { } aux })
                loss = loss + aux * _options.MoeLoadBalancingWeight;
        return loss;
    }
}
