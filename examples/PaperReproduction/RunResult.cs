using System.Globalization;
using System.Text;

namespace PaperReproduction;

/// <summary>What one run measured; written to results.json (snake_case).</summary>
internal sealed record RunResult(
    string Name, string Experiment, IReadOnlyList<string> Experiments, string FfnKind, int Experts, int Heads, int TopK, bool QueryBn,
    long TotalParams, long ActiveParams, long FlopsPerToken, double TrainingFlops, int Steps, long TokensSeen,
    double ValLoss, double ValPerplexity, long EvalTokens, double? ExpertUsage, double? UsageKl,
    double? TopPercentShare, double? InputRank, double? QueryRank,
    double TrainSeconds, double EvalSeconds, double WallSeconds, double MedianStepSeconds, IReadOnlyList<double> TrainingLoss);

/// <summary>Shared settings of all runs; written to results.json beside the runs.</summary>
internal sealed record ExperimentSetup(
    string Budget, int ModelDimension, int Layers, int AttentionHeads, int ContextLength, int BatchSize, int KeyDimension, int VocabularySize,
    int Seed, int ReferenceSteps, string ReferenceRun, double TrainingFlopsPerRun, long TrainTokens, long ValidationTokens, long EvalTokens,
    double UnigramPerplexityOnEvalTokens, string FlopCounting, bool NativeKernels, int TorchThreads, int ProcessorCount, string StartedUtc, double TotalWallSeconds);

internal sealed record ResultsFile(ExperimentSetup Setup, IReadOnlyList<RunResult> Runs);

/// <summary>The Markdown tables of results.md (and the console).</summary>
internal static class ResultTables
{
    private static string F(double value, string format) => value.ToString(format, CultureInfo.InvariantCulture);

    private static string Millions(long value) => F(value / 1e6, "0.00") + " M";

    private static string SideOf(RunResult r) => r.Experts == 0 ? "–" : $"{(int)Math.Round(Math.Sqrt(r.Experts))}²";

    private static string Usage(RunResult r) => r.ExpertUsage is { } u ? F(100 * u, "0.00") + "%" : "–";

    private static string Kl(RunResult r) => r.UsageKl is { } kl ? F(kl, "0.000") : "–";

    public static string Render(ExperimentSetup setup, IReadOnlyList<RunResult> runs)
    {
        var text = new StringBuilder();
        text.AppendLine($"Budget `{setup.Budget}`: d = {setup.ModelDimension}, {setup.Layers} blocks, context {setup.ContextLength}, batch {setup.BatchSize}, " +
                        $"d_key = {setup.KeyDimension}, {F(setup.TrainingFlopsPerRun, "0.00e0")} training FLOPs per run; perplexity and usage over the first " +
                        $"{setup.EvalTokens:N0} validation tokens (unigram baseline {F(setup.UnigramPerplexityOnEvalTokens, "0.0")}).");
        text.AppendLine();
        text.AppendLine("| run | experiments | FFN | N | h | k | query BN | total params | active params | FLOPs/token | steps | tokens seen | val ppl | usage | KL | wall s |");
        text.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var r in runs)
            text.AppendLine($"| {r.Name} | {string.Join(", ", r.Experiments)} | {r.FfnKind} | {SideOf(r)} | {(r.Heads == 0 ? "–" : r.Heads)} | {(r.TopK == 0 ? "–" : r.TopK)} | " +
                            $"{(r.Experts == 0 ? "–" : r.QueryBn ? "yes" : "no")} | {Millions(r.TotalParams)} | {Millions(r.ActiveParams)} | {F(r.FlopsPerToken / 1e6, "0.00")} M | " +
                            $"{r.Steps} | {r.TokensSeen:N0} | {F(r.ValPerplexity, "0.00")} | {Usage(r)} | {Kl(r)} | {F(r.WallSeconds, "0")} |");
        var bn = runs.Where(r => r.Experiments.Contains(RunSpec.QueryBn)).ToList();
        if (bn.Count > 0)
        {
            text.AppendLine();
            text.AppendLine("Query batch norm (PEER, h = 8, k = 16): usage / KL / perplexity");
            text.AppendLine();
            text.AppendLine("| N | usage, no BN | usage, BN | KL, no BN | KL, BN | ppl, no BN | ppl, BN |");
            text.AppendLine("|---|---|---|---|---|---|---|");
            foreach (var group in bn.GroupBy(r => r.Experts).OrderBy(g => g.Key))
            {
                var off = group.FirstOrDefault(r => !r.QueryBn);
                var on = group.FirstOrDefault(r => r.QueryBn);
                string Cell(RunResult? r, Func<RunResult, string> f) => r is null ? "–" : f(r);
                text.AppendLine($"| {SideOf(group.First())} = {group.Key:N0} | {Cell(off, Usage)} | {Cell(on, Usage)} | {Cell(off, Kl)} | {Cell(on, Kl)} | " +
                                $"{Cell(off, r => F(r.ValPerplexity, "0.00"))} | {Cell(on, r => F(r.ValPerplexity, "0.00"))} |");
            }
        }
        var granularity = runs.Where(r => r.Experiments.Contains(RunSpec.Granularity)).OrderBy(r => r.Heads).ToList();
        if (granularity.Count > 0)
        {
            text.AppendLine();
            text.AppendLine($"Granularity (PEER, N = {SideOf(granularity[0])}, h·k = {granularity[0].Heads * granularity[0].TopK})");
            text.AppendLine();
            text.AppendLine("| h | k | val ppl | usage | KL |");
            text.AppendLine("|---|---|---|---|---|");
            foreach (var r in granularity) text.AppendLine($"| {r.Heads} | {r.TopK} | {F(r.ValPerplexity, "0.00")} | {Usage(r)} | {Kl(r)} |");
        }
        return text.ToString();
    }
}
