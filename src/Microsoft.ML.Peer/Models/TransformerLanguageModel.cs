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
public sealed class TransformerLanguageModel : TransformerModel<LanguageModelOptions>
{
    public TransformerLanguageModel(LanguageModelOptions options)
        : base(nameof(TransformerLanguageModel), options, o => o.Validate(), o => o.Clone(), causal: true)
    {
        RegisterComponents();
    }

    public LanguageModelOptions Options => Settings.Clone();

    /// <summary>Tokens [B, T] (int64, T ≤ context length) → next-token logits [B, T, V].</summary>
    public override Tensor forward(Tensor tokens)
    {
        using var scope = NewDisposeScope();
        return matmul(Encode(tokens, null), TokenEmbeddingWeight.t()).MoveToOuterDisposeScope();
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
        var loss = WithAuxiliaryLosses(crossEntropy);
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
        if (maxNewTokens < 0)
            throw new ArgumentOutOfRangeException(nameof(maxNewTokens), maxNewTokens, "maxNewTokens must not be negative.");
        if (temperature < 0 || double.IsNaN(temperature))
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "temperature must be ≥ 0.");
        var wasTraining = training;
        eval();
        try
        {
            using var noGrad = no_grad();
            using var generator = new Generator((ulong)seed);
            var tokens = prompt.ToList();
            var device = TokenEmbeddingWeight.device;
            for (int i = 0; i < maxNewTokens; i++)
            {
                using var scope = NewDisposeScope();
                var window = tokens.Skip(Math.Max(0, tokens.Count - Settings.ContextLength)).Select(t => (long)t).ToArray();
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
