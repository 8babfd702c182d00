using Microsoft.ML.Peer;
using ScottPlot;

namespace Microsoft.ML.Peer.Examples;

/// <summary>Renders a training curve (loss against optimizer step, and a validation metric if reported) as a PNG.</summary>
public static class TrainingCurvePlot
{
    /// <summary>Writes <paramref name="path"/> and returns its full path.</summary>
    /// <param name="reports">The trainer's progress reports.</param>
    /// <param name="title">Plot title.</param>
    /// <param name="validationLabel">Legend label of the validation metric (e.g. "validation perplexity"); null to omit it.</param>
    /// <param name="validationPoints">Optional (step, value) points of a validation metric measured outside the reports.</param>
    public static string Save(string path, IReadOnlyList<PeerTrainingProgress> reports, string title, string? validationLabel = null,
        IReadOnlyList<(double Step, double Value)>? validationPoints = null)
    {
        ArgumentNullException.ThrowIfNull(reports);
        var plot = new Plot();
        plot.Title(title);
        plot.XLabel("optimizer step");
        plot.YLabel("training loss (cross-entropy, nats)");
        if (reports.Count > 0)
        {
            var loss = plot.Add.Scatter(reports.Select(r => (double)r.Step).ToArray(), reports.Select(r => r.Loss).ToArray());
            loss.LegendText = "training loss (mean since last report)";
            loss.MarkerSize = 3;
        }
        var points = validationPoints?.ToList()
            ?? reports.Where(r => r.ValidationMetric is not null).Select(r => ((double)r.Step, r.ValidationMetric!.Value)).ToList();
        if (validationLabel is not null && points.Count > 0)
        {
            var validation = plot.Add.Scatter(points.Select(p => p.Item1).ToArray(), points.Select(p => p.Item2).ToArray());
            validation.LegendText = validationLabel;
            validation.Axes.YAxis = plot.Axes.Right;
            validation.MarkerSize = 6;
            plot.Axes.Right.Label.Text = validationLabel;
        }
        plot.ShowLegend(Alignment.UpperRight);
        string full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        plot.SavePng(full, 900, 500);
        return full;
    }
}
