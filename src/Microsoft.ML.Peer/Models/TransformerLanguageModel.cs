using Microsoft.ML.Peer.Native;
using Microsoft.ML.Peer.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Peer.Models;

/// <summary>
/// Decoder-only transformer language model (pre-norm, causal self-attention, learned positions).
/// The output projection is tied to the token embedding: at laptop scale an untied V×d output
/// matrix would hold more parameters than the feed-forward blocks being compared.
/// </summary>
public sealed class TransformerLanguageModel : Module<Tensor, Tensor>
{
    private readonly LanguageModelOptions _options;
    private readonly Embedding token_embedding;
    private readonly Embedding position_embedding;
    private readonly ModuleList<TransformerBlock> blocks;
    private readonly LayerNorm final_norm;

    public TransformerLanguageModel(LanguageModelOptions options) : base(TorchSharpRuntime.Prepared(nameof(TransformerLanguageModel)))
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
            .Select(i => new TransformerBlock(d, options.AttentionHeads, _options.CreateFeedForwardOfBlock(i)))
            .ToArray());
        final_norm = nn.LayerNorm(d);
        RegisterComponents();
    }

    public LanguageModelOptions Options => _options.Clone();

    /// <summary>The transformer blocks, in order.</summary>
    internal IReadOnlyList<TransformerBlock> Blocks => blocks.ToList();

    /// <summary>Every product-key router (PEER and PKM layers) with the index of its block.</summary>
    public IEnumerable<(int Block, ProductKeyRouter Router)> ProductKeyRouters => TransformerBlock.ProductKeyRoutersOf(blocks);

    /// <summary>The expert/value tables whose gradients are sparse rows (PEER and PKM with SparseGradients on).</summary>
    public IEnumerable<Parameter> SparseGradientTables() => TransformerBlock.SparseGradientTablesOf(blocks);

    /// <summary>The names (as named_parameters() gives them) of every PEER/PKM expert or value table, with whether its gradients are sparse rows.</summary>
    internal IEnumerable<(string Name, bool Sparse)> ExpertTableNames() => TransformerBlock.ExpertTableNamesOf(this);

    /// <summary>Tokens [B, T] (int64, T ≤ context length) → next-token logits [B, T, V].</summary>
    public override Tensor forward(Tensor tokens)
    {
        if (tokens.dim() != 2) throw new ArgumentException($"Tokens must have shape [batch, time]; got [{string.Join(", ", tokens.shape)}].", nameof(tokens));
        long time = tokens.shape[1];
        if (time > _options.ContextLength)
            throw new ArgumentException($"Sequence length {time} exceeds the model's context length {_options.ContextLength}.", nameof(tokens));
        using var scope = NewDisposeScope();
        var positions = arange(time, dtype: ScalarType.Int64, device: tokens.device);
        var h = token_embedding.forward(tokens) + position_embedding.forward(positions);
        foreach (var block in blocks) h = block.forward(h);
        h = final_norm.forward(h);
        return matmul(h, token_embedding.weight!.t()).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Mean next-token cross-entropy of <paramref name="inputs"/> → <paramref name="targets"/> plus, in training
    /// mode, the weighted auxiliary losses (MoE load balancing). Returns (total loss, cross-entropy alone).
    /// </summary>
    public (Tensor Loss, Tensor CrossEntropy) Loss(Tensor inputs, Tensor targets)
    {
        using var scope = NewDisposeScope();
        var logits = forward(inputs);
        var crossEntropy = F.cross_entropy(logits.reshape(-1, logits.shape[^1]), targets.reshape(-1));
        var loss = crossEntropy;
        if (training)
        {
            foreach (var block in blocks)
                if (block.FeedForward is IAuxiliaryLossSource { AuxiliaryLoss: { } aux })
                    loss = loss + aux * _options.MoeLoadBalancingWeight;
        }
        return (loss.MoveToOuterDisposeScope(), crossEntropy.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Samples up to <paramref name="maxNewTokens"/> tokens after <paramref name="prompt"/> (evaluation mode,
    /// running BN statistics). Temperature 0 is greedy. The same seed gives the same tokens.
    /// </summary>
    public int[] Generate(IReadOnlyList<int> prompt, int maxNewTokens, double temperature = 0.8, long seed = 0, int? stopToken = null)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        if (prompt.Count == 0) throw new ArgumentException("The prompt must hold at least one token.", nameof(prompt));
        if (maxNewTokens < 0) throw new ArgumentOutOfRangeException(nameof(maxNewTokens), maxNewTokens, "maxNewTokens must not be negative.");
        if (temperature < 0 || double.IsNaN(temperature)) throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "temperature must be ≥ 0.");
        var wasTraining = training;
        eval();
        try
        {
            using var noGrad = no_grad();
            using var generator = new Generator((ulong)seed);
            var tokens = prompt.ToList();
            var device = token_embedding.weight!.device;
            for (int i = 0; i < maxNewTokens; i++)
            {
                using var scope = NewDisposeScope();
                var window = tokens.Skip(Math.Max(0, tokens.Count - _options.ContextLength)).Select(t => (long)t).ToArray();
                var logits = forward(tensor(window, device: device).unsqueeze(0))[0, -1];
                int next = temperature == 0
                    ? (int)logits.argmax().item<long>()
                    : (int)multinomial(F.softmax(logits.to(ScalarType.Float64) / temperature, -1), 1, generator: generator).item<long>();
                tokens.Add(next);
                if (stopToken == next) break;
            }
            return tokens.Skip(prompt.Count).ToArray();
        }
        finally
        {
            train(wasTraining);
        }
    }
}
