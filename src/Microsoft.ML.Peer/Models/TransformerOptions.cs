using Microsoft.ML.Peer.Layers;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using static Microsoft.ML.Peer.Layers.OptionChecks;

namespace Microsoft.ML.Peer.Models;

/// <summary>
/// The shape shared by every transformer in this library (<see cref="LanguageModelOptions"/>,
/// <see cref="TextClassifierOptions"/>): vocabulary, width, depth, attention heads and the feed-forward kind of
/// the <see cref="SparseBlocks"/>; every other block uses a dense FFW, so the paper's comparisons are one switch
/// away. One base class, so both models validate and clone these settings the same way.
/// </summary>
public abstract class TransformerOptions
{
    /// <summary>Token vocabulary size. Required; at most 1,048,576.</summary>
    public int VocabularySize { get; set; }

    /// <summary>
    /// The vocabulary the plugin's tokenizer is built to for either task (<c>CompactTokenizer.Build</c> over the training
    /// texts): 8192; 16384 was not better on SpamAssassin.
    /// </summary>
    public const int RecommendedVocabularySize = 8192;

    /// <summary>Longest sequence the model attends over (learned positions); at most 65,536. Each model's options set the
    /// default.</summary>
    public int ContextLength { get; set; }

    /// <summary>Residual width d; at most 16,384. Each model's options set the default.</summary>
    public int ModelDimension { get; set; }

    /// <summary>Transformer blocks; at most 256. Each model's options set the default.</summary>
    public int Layers { get; set; }

    /// <summary>Self-attention heads; must divide <see cref="ModelDimension"/>. Each model's options set the default.</summary>
    public int AttentionHeads { get; set; }

    /// <summary>Hidden width of the dense FFW blocks. Default 4·d (0 means 4·d); at most 262,144.</summary>
    public int DenseHiddenDimension { get; set; }

    /// <summary>The feed-forward kind of the sparse blocks. Default PEER; the text classifier's options default to PKM
    /// (<c>TextClassifierOptions.RecommendedFeedForward</c>).</summary>
    public FeedForwardKind FeedForward { get; set; } = FeedForwardKind.Peer;

    /// <summary>
    /// Indices of the blocks whose FFW is replaced by <see cref="FeedForward"/>. Default (null): the middle
    /// block only, as in the paper. Ignored for <see cref="FeedForwardKind.Dense"/>.
    /// </summary>
    public int[]? SparseBlocks { get; set; }

    /// <summary>PEER options (FeedForward = Peer). Each model's options set the default (see <see cref="UseProductKeys"/>).</summary>
    public PeerOptions Peer { get; set; } = new();

    /// <summary>PKM options (FeedForward = ProductKeyMemory). Each model's options set the default, the same as
    /// <see cref="Peer"/>'s.</summary>
    public ProductKeyOptions ProductKeyMemory { get; set; } = new();

    /// <summary>MoE experts E. Default 8; at most 4,096.</summary>
    public int MoeExperts { get; set; } = 8;

    /// <summary>Experts each token is routed to. Default 2.</summary>
    public int MoeTopK { get; set; } = 2;

    /// <summary>Hidden width of each MoE expert. Default 0 means the dense hidden width.</summary>
    public int MoeHiddenDimension { get; set; }

    /// <summary>Weight of the MoE load-balancing loss. Default 0.01.</summary>
    public double MoeLoadBalancingWeight { get; set; } = 0.01;

    public int EffectiveDenseHidden => DenseHiddenDimension > 0 ? DenseHiddenDimension : 4 * ModelDimension;

    public int EffectiveMoeHidden => MoeHiddenDimension > 0 ? MoeHiddenDimension : EffectiveDenseHidden;

    /// <summary>The blocks that get <see cref="FeedForward"/>: none for Dense or without blocks, else <see cref="SparseBlocks"/> or the
    /// middle one.</summary>
    public int[] EffectiveSparseBlocks =>
        FeedForward == FeedForwardKind.Dense || Layers == 0 ? Array.Empty<int>() : SparseBlocks ?? new[] { Layers / 2 };

    /// <summary>
    /// A model's default PEER and PKM layers: <paramref name="experts"/>, <paramref name="heads"/>, <paramref name="topK"/>
    /// and <paramref name="keyDimension"/> with sparse row gradients; every other setting is the layer's own (the paper's).
    /// </summary>
    private protected void UseProductKeys(int experts, int heads, int topK, int keyDimension)
    {
        Peer = new() { Experts = experts, Heads = heads, TopK = topK, KeyDimension = keyDimension, SparseGradients = true };
        ProductKeyMemory = new() { Experts = experts, Heads = heads, TopK = topK, KeyDimension = keyDimension, SparseGradients = true };
    }

    /// <summary>A deep copy of the shared settings (the derived class adds its own by <c>MemberwiseClone</c>).</summary>
    protected TransformerOptions CloneTransformer()
    {
        var copy = (TransformerOptions)MemberwiseClone();
        copy.Peer = Peer.Clone();
        copy.ProductKeyMemory = ProductKeyMemory.Clone();
        copy.SparseBlocks = SparseBlocks?.ToArray();
        return copy;
    }

    /// <summary>Sets every shared setting to <paramref name="source"/>'s (deep copies), so a model of another task has the same
    /// embeddings and blocks and can start from its weights.</summary>
    private protected void CopyTransformerSettingsFrom(TransformerOptions source)
    {
        ArgumentNullException.ThrowIfNull(source);
        VocabularySize = source.VocabularySize;
        ContextLength = source.ContextLength;
        ModelDimension = source.ModelDimension;
        Layers = source.Layers;
        AttentionHeads = source.AttentionHeads;
        DenseHiddenDimension = source.DenseHiddenDimension;
        FeedForward = source.FeedForward;
        SparseBlocks = source.SparseBlocks?.ToArray();
        Peer = source.Peer.Clone();
        ProductKeyMemory = source.ProductKeyMemory.Clone();
        MoeExperts = source.MoeExperts;
        MoeTopK = source.MoeTopK;
        MoeHiddenDimension = source.MoeHiddenDimension;
        MoeLoadBalancingWeight = source.MoeLoadBalancingWeight;
    }

    /// <summary>Checks the shared options; the exception names the one that is wrong.</summary>
    /// <param name="minimumLayers">1 for a language model; 0 where a model can work without blocks.</param>
    protected void ValidateTransformer(int minimumLayers)
    {
        Positive(VocabularySize, nameof(VocabularySize));
        AtMost(VocabularySize, ModelLimits.VocabularySize, nameof(VocabularySize));
        Positive(ContextLength, nameof(ContextLength));
        AtMost(ContextLength, ModelLimits.ContextLength, nameof(ContextLength));
        Positive(ModelDimension, nameof(ModelDimension));
        AtMost(ModelDimension, ModelLimits.ModelDimension, nameof(ModelDimension));
        if (Layers < minimumLayers)
            throw new ArgumentOutOfRangeException(nameof(Layers), Layers,
                $"{nameof(Layers)} must be at least {minimumLayers}; got {Layers}.");
        AtMost(Layers, ModelLimits.Layers, nameof(Layers));
        Positive(AttentionHeads, nameof(AttentionHeads));
        if (ModelDimension % AttentionHeads != 0)
            throw new ArgumentOutOfRangeException(nameof(AttentionHeads), AttentionHeads,
                $"{nameof(AttentionHeads)} ({AttentionHeads}) must divide {nameof(ModelDimension)} ({ModelDimension}).");
        if (DenseHiddenDimension < 0)
            throw new ArgumentOutOfRangeException(nameof(DenseHiddenDimension), DenseHiddenDimension,
                $"{nameof(DenseHiddenDimension)} must not be negative.");
        AtMost(EffectiveDenseHidden, ModelLimits.HiddenDimension, nameof(DenseHiddenDimension));
        if (Peer is null) throw new ArgumentNullException(nameof(Peer), $"{nameof(Peer)} options are required.");
        if (ProductKeyMemory is null)
            throw new ArgumentNullException(nameof(ProductKeyMemory), $"{nameof(ProductKeyMemory)} options are required.");
        if (!Enum.IsDefined(FeedForward))
            throw new ArgumentOutOfRangeException(nameof(FeedForward), FeedForward, $"Unknown {nameof(FeedForward)} kind {FeedForward}.");
        foreach (var block in EffectiveSparseBlocks)
            if (block < 0 || block >= Layers)
                throw new ArgumentOutOfRangeException(nameof(SparseBlocks), block,
                    $"{nameof(SparseBlocks)} holds block {block}, outside 0..{Layers - 1}.");
        switch (FeedForward)
        {
            case FeedForwardKind.Peer: Peer.Validate(); break;
            case FeedForwardKind.ProductKeyMemory: ProductKeyMemory.Validate(); break;
            case FeedForwardKind.MoE:
                Positive(MoeExperts, nameof(MoeExperts));
                AtMost(MoeExperts, ModelLimits.MoeExperts, nameof(MoeExperts));
                if (MoeHiddenDimension < 0)
                    throw new ArgumentOutOfRangeException(nameof(MoeHiddenDimension), MoeHiddenDimension,
                        $"{nameof(MoeHiddenDimension)} must not be negative.");
                AtMost(EffectiveMoeHidden, ModelLimits.HiddenDimension, nameof(MoeHiddenDimension));
                if (!double.IsFinite(MoeLoadBalancingWeight) || MoeLoadBalancingWeight < 0)
                    throw new ArgumentOutOfRangeException(nameof(MoeLoadBalancingWeight), MoeLoadBalancingWeight,
                        $"{nameof(MoeLoadBalancingWeight)} must be finite and not negative; got {MoeLoadBalancingWeight}.");
                if (MoeTopK <= 0 || MoeTopK > MoeExperts)
                    throw new ArgumentOutOfRangeException(nameof(MoeTopK), MoeTopK,
                        $"{nameof(MoeTopK)} must be between 1 and {nameof(MoeExperts)} ({MoeExperts}); got {MoeTopK}.");
                break;
        }
    }

    /// <summary>The feed-forward module of kind <paramref name="kind"/> at this width (dense, MoE, PKM or PEER).</summary>
    internal Module<Tensor, Tensor> CreateFeedForward(FeedForwardKind kind) => kind switch
    {
        FeedForwardKind.Dense => new DenseFeedForward(ModelDimension, EffectiveDenseHidden),
        FeedForwardKind.MoE => new MixtureOfExpertsFeedForward(ModelDimension, EffectiveMoeHidden, MoeExperts, MoeTopK),
        FeedForwardKind.ProductKeyMemory => new ProductKeyMemory(ModelDimension, ProductKeyMemory),
        FeedForwardKind.Peer => new PeerLayer(ModelDimension, Peer),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown feed-forward kind."),
    };

    /// <summary>The feed-forward module of block <paramref name="block"/>: <see cref="FeedForward"/> in a sparse block, dense
    /// elsewhere.</summary>
    internal Module<Tensor, Tensor> CreateFeedForwardOfBlock(int block) =>
        CreateFeedForward(EffectiveSparseBlocks.Contains(block) ? FeedForward : FeedForwardKind.Dense);
}
