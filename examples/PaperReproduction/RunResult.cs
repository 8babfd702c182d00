using System.Globalization;
using System.Text;

namespace PaperReproduction;

/// <summary>
/// What one run measured; written to results.json (snake_case). <see cref="ExpertUsage"/> and <see cref="UsageKl"/> are measured
/// with the query norms' running statistics (as scoring sees the model), <see cref="BatchStatsUsage"/> and
/// <see cref="BatchStatsKl"/> with each evaluation batch's own (as training sees it); <see cref="Epochs"/> counts how many
/// times the run's training tokens cover the training stream.
/// </summary>
internal sealed record RunResult(
    string Name, string Experiment, IReadOnlyList<string> Experiments, string FfnKind, int Experts, int Heads, int TopK, bool QueryBn,
    long TotalParams, long ActiveParams, long FlopsPerToken, double TrainingFlops, int Steps, long TokensSeen, double Epochs,
    double ValLoss, double ValPerplexity, long EvalTokens, double? ExpertUsage, double? UsageKl, double? BatchStatsUsage,
    double? BatchStatsKl, double? TopPercentShare, double? InputRank, double? QueryRank,
    double TrainSeconds, double EvalSeconds, double WallSeconds, double MedianStepSeconds, IReadOnlyList<double> TrainingLoss,
    IReadOnlyList<UsagePoint> UsageCurve);

/// <summary>
/// One point of a run's usage_curve: validation perplexity over the budget's diagnostic tokens after <see cref="TokensSeen"/>
/// training tokens and, for PEER and PKM, usage and KL with running and with batch statistics and the layer's input and
/// query rank over the same tokens.
/// </summary>
internal sealed record UsagePoint(int Step, long TokensSeen, double ValPerplexity, double? Usage, double? Kl, double? BatchStatsUsage,
    double? BatchStatsKl, double? TopPercentShare, double? InputRank, double? QueryRank);

/// <summary>runs/&lt;name&gt;.json: a finished run and the settings it was trained under (a rerun keeps it only if they match).</summary>
internal sealed record SavedRun(string Fingerprint, RunResult Result);

/// <summary>Shared settings of all runs; written to results.json beside the runs.</summary>
internal sealed record ExperimentSetup(
    string Budget, int ModelDimension, int Layers, int AttentionHeads, int ContextLength, int BatchSize, int KeyDimension,
    int VocabularySize, int Seed, double LearningRate, int ReferenceSteps, int LowReferenceSteps, string ReferenceRun,
    double TrainingFlopsPerRun,
    double? LowTrainingFlopsPerRun, long TrainTokens, long ValidationTokens, long EvalTokens, double UnigramPerplexityOnEvalTokens,
    string FlopCounting, string Data,
    bool NativeKernels, int TorchThreads, int ProcessorCount, string StartedUtc, double TotalWallSeconds, double SumOfRunWallSeconds);

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
        text.AppendLine("| run | experiments | FFN | N | h | k | query BN | total params | active params | FLOPs/token | steps | tokens seen | epochs | val ppl | usage | KL | usage, batch stats | input rank | wall s |");
        text.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var r in runs)
            text.AppendLine($"| {r.Name} | {string.Join(", ", r.Experiments)} | {r.FfnKind} | {SideOf(r)} | {(r.Heads == 0 ? "–" : r.Heads)} | {(r.TopK == 0 ? "–" : r.TopK)} | " +
                            $"{(r.Experts == 0 ? "–" : r.QueryBn ? "yes" : "no")} | {Millions(r.TotalParams)} | {Millions(r.ActiveParams)} | {F(r.FlopsPerToken / 1e6, "0.00")} M | " +
                            $"{r.Steps} | {r.TokensSeen:N0} | {F(r.Epochs, "0.00")} | {F(r.ValPerplexity, "0.00")} | {Usage(r)} | {Kl(r)} | " +
                            $"{(r.BatchStatsUsage is { } b ? F(100 * b, "0.00") + "%" : "–")} | {(r.InputRank is { } ir ? F(ir, "0.0") : "–")} | {F(r.WallSeconds, "0")} |");
        foreach (var level in new[] { RunSpec.IsoFlop, RunSpec.IsoFlopLow })
        {
            var iso = runs.Where(r => r.Experiments.Contains(level)).OrderBy(r => r.ValPerplexity).ToList();
            if (iso.Count == 0) continue;
            text.AppendLine();
            text.AppendLine($"IsoFLOP at {F(iso[0].TrainingFlops, "0.00e0")} training FLOPs ({(level == RunSpec.IsoFlop ? "main" : "low")} compute), best first" +
                            $" (unigram {F(setup.UnigramPerplexityOnEvalTokens, "0.0")})");
            text.AppendLine();
            text.AppendLine("| run | total params | steps | epochs | val ppl | ppl / unigram |");
            text.AppendLine("|---|---|---|---|---|---|");
            foreach (var r in iso)
                text.AppendLine($"| {r.Name} | {Millions(r.TotalParams)} | {r.Steps} | {F(r.Epochs, "0.00")} | {F(r.ValPerplexity, "0.00")} | {F(r.ValPerplexity / setup.UnigramPerplexityOnEvalTokens, "0.000")} |");
        }
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
        var remedies = runs.Where(r => r.Experiments.Contains(RunSpec.Remedy)).ToList();
        if (remedies.Count > 0)
        {
            var baseline = runs.FirstOrDefault(r => r.Name == RunSpec.Reference.Name + "-low");
            text.AppendLine();
            text.AppendLine("Remedies for PEER 1024² usage (low compute level; the first row is the paper's layer)");
            text.AppendLine();
            text.AppendLine("| run | val ppl | usage | usage, batch stats | KL | top 1% share | input rank | query rank | wall s |");
            text.AppendLine("|---|---|---|---|---|---|---|---|---|");
            foreach (var r in (baseline is null ? remedies : remedies.Prepend(baseline)))
                text.AppendLine($"| {r.Name} | {F(r.ValPerplexity, "0.00")} | {Usage(r)} | {(r.BatchStatsUsage is { } b ? F(100 * b, "0.00") + "%" : "–")} | {Kl(r)} | " +
                                $"{(r.TopPercentShare is { } t ? F(100 * t, "0.0") + "%" : "–")} | {(r.InputRank is { } ir ? F(ir, "0.0") : "–")} | " +
                                $"{(r.QueryRank is { } qr ? F(qr, "0.0") : "–")} | {F(r.WallSeconds, "0")} |");
        }
        var granularity = runs.Where(r => r.Experiments.Contains(RunSpec.Granularity)).OrderBy(r => r.Heads).ToList();
        if (granularity.Count > 0)
        {
            text.AppendLine();
            text.AppendLine($"Granularity (PEER, N = {SideOf(granularity[0])}, h·k = {granularity[0].Heads * granularity[0].TopK})");
            text.AppendLine();
            text.AppendLine("| h | k | val ppl | usage | KL |");
            text.AppendLine("|---|---|---|---|---|");
            foreach (var r in granularity)
                text.AppendLine($"| {r.Heads} | {r.TopK} | {F(r.ValPerplexity, "0.00")} | {Usage(r)} | {Kl(r)} |");
        }
        return text.ToString();
    }
}
