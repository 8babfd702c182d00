using Microsoft.ML.Peer.Layers;
using static TorchSharp.torch;

namespace PaperReproduction;

/// <summary>
/// --geometry: expert usage of a fresh PEER router (N = 1024², h = 8, k = 16, the budget's d_key) on synthetic layer
/// inputs whose covariance spectrum decays at a chosen rate, with raw or unit-length sub-keys and batch-normalised or
/// whitened queries. It separates what the retrieval geometry costs from what training does: with isotropic queries,
/// uniform retrieval of the same 16,384 × 128 slots would reach 1 − e^(−2) ≈ 86% of the experts.
/// </summary>
internal static class RetrievalGeometry
{
    public static int Run(Budget budget)
    {
        const int tokens = 16_384, heads = 8, topK = 16, subKeys = 1024;
        int d = budget.Dimension;
        Console.WriteLine($"Fresh router, N = {subKeys}², h = {heads}, k = {topK}, d = {d}, d_key = {budget.KeyDimension}, {tokens:N0} tokens (training-mode statistics); " +
                          $"uniform retrieval would reach {100 * (1 - Math.Exp(-(double)tokens * heads * topK / ((double)subKeys * subKeys))):F1}%");
        Console.WriteLine("| input spectrum | input rank | BN, raw keys | BN, unit keys | whitened, raw keys | whitened, unit keys |");
        Console.WriteLine("|---|---|---|---|---|---|");
        foreach (double? decay in new double?[] { null, 30, 10, 5, 3 })
        {
            using var scope = NewDisposeScope();
            manual_seed(11);
            // Feature i has variance exp(−i/decay): an effective rank that falls with the decay length.
            var scale = decay is { } length ? exp(-arange(d).to(ScalarType.Float32) / length).sqrt() : ones(d);
            var inputs = randn(tokens, d) * scale;
            var cells = new List<string>();
            foreach (bool whiten in new[] { false, true })
                foreach (bool unitKeys in new[] { false, true })
                {
                    manual_seed(12);
                    using var router = new ProductKeyRouter(d, new ProductKeyOptions
                    {
                        Experts = subKeys * subKeys, Heads = heads, TopK = topK, KeyDimension = budget.KeyDimension,
                        QueryWhitening = whiten, NormalizeSubKeys = unitKeys,
                    });
                    router.train();
                    router.Usage.Enabled = true;
                    using (no_grad())
                        for (int start = 0; start < tokens; start += 2048)
                            router.forward(inputs[start..(start + 2048)]);
                    var usage = router.Usage.Compute();
                    cells.Add($"{100 * usage.UsedFraction:F1}% (KL {usage.Unevenness:F2})");
                    if (!whiten && !unitKeys) cells.Insert(0, $"{usage.InputEffectiveRank:F1}");
                }
            Console.WriteLine($"| {(decay is { } l ? $"variance e^(−i/{l})" : "isotropic")} | {string.Join(" | ", cells)} |");
        }
        return 0;
    }
}
