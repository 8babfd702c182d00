using ScottPlot;

namespace PaperReproduction;

/// <summary>The PNG plots of the reproduction (ScottPlot), each with labelled axes, a legend and a title.</summary>
internal static class ResultPlots
{
    private const int Width = 1100, Height = 550;

    private static string Save(Plot plot, string folder, string file)
    {
        string path = Path.GetFullPath(Path.Combine(folder, file));
        plot.ShowLegend(Edge.Right);   // beside the data, never over a point
        plot.SavePng(path, Width, Height);
        return path;
    }

    /// <summary>Ticks at powers of two on an axis whose coordinates are log2 of the value.</summary>
    private static void Log2Ticks(IAxis axis, IEnumerable<double> values, Func<double, string> label)
    {
        var positions = values.Select(Math.Log2).Distinct().Order().ToArray();
        axis.SetTicks(positions, positions.Select(p => label(Math.Pow(2, p))).ToArray());
    }

    /// <summary>
    /// Validation perplexity against total parameters for the isoFLOP runs: one curve per compute budget (the paper's
    /// Figure 1 in miniature), each point labelled with its run.
    /// </summary>
    public static string PerplexityVersusParameters(string folder, IReadOnlyList<RunResult> runs, ExperimentSetup setup)
    {
        var plot = new Plot();
        var all = runs.Where(r => r.Experiments.Contains(RunSpec.IsoFlop) || r.Experiments.Contains(RunSpec.IsoFlopLow)).ToList();
        foreach (var level in new[] { RunSpec.IsoFlop, RunSpec.IsoFlopLow })
        {
            var points = all.Where(r => r.Experiments.Contains(level)).OrderBy(r => r.TotalParams).ToList();
            if (points.Count == 0) continue;
            var series =
                plot.Add.Scatter(points.Select(r => Math.Log10(r.TotalParams)).ToArray(), points.Select(r => r.ValPerplexity).ToArray());
            series.LegendText = $"{points[0].TrainingFlops:0.00e0} training FLOPs";
            series.MarkerSize = 10;
            series.LineWidth = 1;
            foreach (var r in points) plot.Add.Text(r.Name, Math.Log10(r.TotalParams), r.ValPerplexity).LabelFontSize = 11;
        }
        var decades = all.Select(r => Math.Log10(r.TotalParams)).ToList();
        if (decades.Count > 0)
        {
            var ticks = Enumerable.Range((int)Math.Floor(decades.Min() * 4),
                (int)Math.Ceiling(decades.Max() * 4) - (int)Math.Floor(decades.Min() * 4) + 1)
                .Select(i => i / 4.0).ToArray();
            plot.Axes.Bottom.SetTicks(ticks, ticks.Select(t => $"{Math.Pow(10, t) / 1e6:0.#} M").ToArray());
            plot.Axes.SetLimitsX(decades.Min() - 0.15, decades.Max() + 0.45);
        }
        plot.Title($"IsoFLOP on Brown, budget {setup.Budget}: one curve per compute budget");
        plot.XLabel("total parameters (log scale)");
        plot.YLabel($"validation perplexity ({setup.EvalTokens:N0} tokens)");
        return Save(plot, folder, "perplexity-vs-parameters.png");
    }

    /// <summary>
    /// Expert usage against training tokens for the query BN runs, with the query norms' running statistics (solid) and
    /// each batch's own (dashed), and the effective rank of the layer input on a second panel: where usage is lost.
    /// </summary>
    public static string UsageCurves(string folder, IReadOnlyList<RunResult> runs, ExperimentSetup setup)
    {
        // The smallest and the largest pool of the ablation, with and without BN: four curves stay readable.
        var ablation = runs.Where(r => r.Experiments.Contains(RunSpec.QueryBn) && r.UsageCurve.Any(p => p.Usage is not null)).ToList();
        var pools = ablation.Select(r => r.Experts).Distinct().Order().ToList();
        var curves = ablation.Where(r => pools.Count > 0 && (r.Experts == pools[0] || r.Experts == pools[^1]))
            .OrderByDescending(r => r.Experts).ThenByDescending(r => r.QueryBn).ToList();
        return UsageCurves(folder, "usage-curves.png", curves, setup);
    }

    /// <summary>The same curves for the paper's layer at the low compute level and each remedy run (remedy-curves.png).</summary>
    public static string RemedyCurves(string folder, IReadOnlyList<RunResult> runs, ExperimentSetup setup)
    {
        string paper = RunSpec.Reference.Name + "-low";
        var curves =
            runs.Where(r => (r.Name == paper || r.Experiments.Contains(RunSpec.Remedy)) && r.UsageCurve.Any(p => p.Usage is not null))
            .OrderBy(r => r.Name == paper ? 0 : 1).ThenBy(r => r.Name, StringComparer.Ordinal).ToList();
        return UsageCurves(folder, "remedy-curves.png", curves, setup);
    }

    private static string UsageCurves(string folder, string fileName, IReadOnlyList<RunResult> curves, ExperimentSetup setup)
    {
        var multiplot = new Multiplot();
        multiplot.AddPlots(2);
        var usage = multiplot.GetPlot(0);
        var rank = multiplot.GetPlot(1);
        var palette = new ScottPlot.Palettes.Category10();
        for (int i = 0; i < curves.Count; i++)
        {
            var r = curves[i];
            var points = r.UsageCurve.Where(p => p.Usage is not null && p.TokensSeen > 0).ToList();
            if (points.Count == 0) continue;
            var x = points.Select(p => Math.Log10(p.TokensSeen)).ToArray();
            var color = palette.GetColor(i);
            // Usage spans four decades over training (0.05% to 40%), so it is drawn on a log scale.
            static double Log(double? fraction) => fraction is > 0 ? Math.Log10(100 * fraction.Value) : double.NaN;
            var running = usage.Add.Scatter(x, points.Select(p => Log(p.Usage)).ToArray());
            running.LegendText = r.Name;
            running.Color = color;
            var batch = usage.Add.Scatter(x, points.Select(p => Log(p.BatchStatsUsage)).ToArray());
            batch.LinePattern = LinePattern.Dashed;
            batch.Color = color;
            batch.MarkerSize = 0;
            var ranks = rank.Add.Scatter(x, points.Select(p => p.InputRank.GetValueOrDefault(double.NaN)).ToArray());
            ranks.LegendText = r.Name;
            ranks.Color = color;
        }
        foreach (var plot in new[] { usage, rank })
        {
            var ticks = Enumerable.Range(6, 14).Select(e => e / 2.0).ToArray();   // 1k, 3.2k, 10k, ... 3.2 M, 10 M
            plot.Axes.Bottom.SetTicks(ticks,
                ticks.Select(t => Math.Pow(10, t) is var v && v >= 1e6 ? $"{v / 1e6:0.#} M" : $"{v / 1e3:0.#} k").ToArray());
            plot.XLabel("training tokens seen (log scale)");
        }
        usage.Title($"Expert usage over training, {setup.Budget} (solid: running statistics, dashed: batch statistics)");
        usage.YLabel("experts used (% of N, log scale)");
        var decades = new[] { -2.0, -1, 0, 1, 2 };
        usage.Axes.Left.SetTicks(decades, new[] { "0.01%", "0.1%", "1%", "10%", "100%" });
        usage.Axes.SetLimitsY(-2.2, 2.1);
        usage.ShowLegend(Edge.Right);
        rank.Title("Effective rank of the PEER/PKM layer's input (exp of the covariance spectrum's entropy)");
        rank.YLabel($"effective rank (of d = {setup.ModelDimension})");
        rank.ShowLegend(Edge.Right);
        string path = Path.GetFullPath(Path.Combine(folder, fileName));
        multiplot.SavePng(path, Width, 2 * Height);
        return path;
    }

    /// <summary>Expert usage (or its unevenness) against N, with and without query batch norm.</summary>
    public static string UsageVersusExperts(string folder, IReadOnlyList<RunResult> runs, ExperimentSetup setup, bool unevenness)
    {
        var plot = new Plot();
        var bn = runs.Where(r => r.Experiments.Contains(RunSpec.QueryBn) && r.ExpertUsage is not null).ToList();
        foreach (var withBn in new[] { false, true })
        {
            var points = bn.Where(r => r.QueryBn == withBn).OrderBy(r => r.Experts).ToList();
            if (points.Count == 0) continue;
            var series = plot.Add.Scatter(points.Select(r => Math.Log2(r.Experts)).ToArray(),
                points.Select(r => unevenness ? r.UsageKl!.Value : 100 * r.ExpertUsage!.Value).ToArray());
            series.LegendText = withBn ? "with query BN" : "without query BN";
            series.MarkerSize = 8;
        }
        Log2Ticks(plot.Axes.Bottom, bn.Select(r => (double)r.Experts), v => $"{Math.Sqrt(v):0}² = {v / 1024:0}k");
        plot.Title(unevenness
            ? "Unevenness of expert usage, KL(z ‖ uniform), PEER h = 8, k = 16"
            : "Expert usage: experts retrieved at least once, PEER h = 8, k = 16");
        plot.XLabel($"experts N (log scale); usage over {setup.EvalTokens:N0} validation tokens");
        plot.YLabel(unevenness ? "KL divergence from uniform (nats)" : "experts used (% of N)");
        if (!unevenness) plot.Axes.SetLimitsY(0, 105);
        return Save(plot, folder, unevenness ? "usage-kl-vs-experts.png" : "usage-vs-experts.png");
    }

    /// <summary>Training loss against step for the isoFLOP runs (moving mean over 10 steps).</summary>
    public static string TrainingCurves(string folder, IReadOnlyList<RunResult> runs, ExperimentSetup setup)
    {
        var plot = new Plot();
        foreach (var r in runs.Where(r => r.Experiments.Contains(RunSpec.IsoFlop)))
        {
            int window = Math.Min(10, Math.Max(1, r.TrainingLoss.Count));
            var smoothed = Enumerable.Range(0, r.TrainingLoss.Count)
                .Select(i => r.TrainingLoss.Skip(Math.Max(0, i - window + 1)).Take(Math.Min(window, i + 1)).Average()).ToArray();
            var series = plot.Add.Scatter(Enumerable.Range(1, smoothed.Length).Select(i => (double)i).ToArray(), smoothed);
            series.LegendText = $"{r.Name} ({r.Steps} steps)";
            series.MarkerSize = 0;
            series.LineWidth = 2;
        }
        plot.Title($"Training loss of the isoFLOP runs (batch {setup.BatchSize}×{setup.ContextLength} tokens, mean of the last 10 steps)");
        plot.XLabel("optimizer step");
        plot.YLabel("training loss (cross-entropy, nats/token)");
        return Save(plot, folder, "training-curves.png");
    }

    /// <summary>Validation perplexity against heads h at fixed h·k.</summary>
    public static string Granularity(string folder, IReadOnlyList<RunResult> runs, ExperimentSetup setup)
    {
        var plot = new Plot();
        var points = runs.Where(r => r.Experiments.Contains(RunSpec.Granularity)).OrderBy(r => r.Heads).ToList();
        if (points.Count > 0)
        {
            var series = plot.Add.Scatter(points.Select(r => Math.Log2(r.Heads)).ToArray(), points.Select(r => r.ValPerplexity).ToArray());
            series.LegendText = $"PEER N = {Math.Sqrt(points[0].Experts):0}², h·k = {points[0].Heads * points[0].TopK}";
            series.MarkerSize = 8;
            Log2Ticks(plot.Axes.Bottom, points.Select(r => (double)r.Heads),
                h => $"h = {h:0}, k = {points[0].Heads * points[0].TopK / h:0}");
        }
        plot.Title("Granularity: same active experts h·k, split into more or fewer heads");
        plot.XLabel("retrieval heads h (log scale), top-k per head k = 128 / h");
        plot.YLabel($"validation perplexity ({setup.EvalTokens:N0} tokens)");
        return Save(plot, folder, "granularity.png");
    }
}
