using Microsoft.ML.Peer.Native;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// Coarse-grained mixture of experts: E dense FFW experts, token-choice top-k softmax gating
/// (weights renormalised over the chosen k), and the Switch Transformer load-balancing loss
/// E · Σ_e f_e · P_e (f_e: share of routed slots, P_e: mean router probability).
/// </summary>
public sealed class MixtureOfExpertsFeedForward : Module<Tensor, Tensor>, IAuxiliaryLossSource
{
    private readonly int _dimension;
    private readonly int _experts;
    private readonly int _topK;
    private readonly Linear gate;
    private readonly ModuleList<DenseFeedForward> experts;
    private Tensor? _auxiliaryLoss;

    public MixtureOfExpertsFeedForward(int dimension, int hiddenDimension, int experts, int topK)
        : base(TorchSharpRuntime.Prepared(nameof(MixtureOfExpertsFeedForward)))
    {
        if (experts <= 0) throw new ArgumentOutOfRangeException(nameof(experts), experts, "The number of MoE experts must be positive.");
        if (topK <= 0 || topK > experts)
            throw new ArgumentOutOfRangeException(nameof(topK), topK,
                $"MoE top-k must be between 1 and the number of experts ({experts}); got {topK}.");
        _dimension = dimension;
        _experts = experts;
        _topK = topK;
        gate = nn.Linear(dimension, experts, hasBias: false);
        this.experts = nn.ModuleList(Enumerable.Range(0, experts).Select(_ => new DenseFeedForward(dimension, hiddenDimension)).ToArray());
        RegisterComponents();
    }

    public Tensor? AuxiliaryLoss => _auxiliaryLoss;

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = input.reshape(-1, _dimension);
        var probabilities = F.softmax(gate.forward(x), -1);                 // [T, E]
        var (topWeights, topExperts) = probabilities.topk(_topK, dim: -1);  // [T, k]
        topWeights = topWeights / topWeights.sum(-1, keepdim: true);
        var output = zeros_like(x);
        for (int e = 0; e < _experts; e++)
        {
            var slots = topExperts.eq(e);                                  // [T, k]
            var rows = slots.any(-1).nonzero().squeeze(-1);
            if (rows.numel() == 0) continue;
            var weight = (topWeights * slots).sum(-1).index_select(0, rows).unsqueeze(-1);
            var y = experts[e].forward(x.index_select(0, rows)) * weight;
            output = output.index_add(0, rows, y, 1);
        }
        // Only training writes to the layer: scoring threads share the model and run forward at the same time, and two of
        // them disposing the last training term at once freed its native tensor twice (a crash in the runtime later on).
        if (training)
        {
            var routedShare = F.one_hot(topExperts.reshape(-1), _experts).to(x.dtype).mean(new long[] { 0 });
            var meanProbability = probabilities.mean(new long[] { 0 });
            SetAuxiliaryLoss((routedShare * meanProbability).sum() * _experts);
        }
        return output.view(input.shape).MoveToOuterDisposeScope();
    }

    private void SetAuxiliaryLoss(Tensor? loss)
    {
        _auxiliaryLoss?.Dispose();
        _auxiliaryLoss = loss?.DetachFromDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) SetAuxiliaryLoss(null);
        base.Dispose(disposing);
    }
}
