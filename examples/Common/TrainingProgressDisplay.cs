using Microsoft.ML.Peer;
using Spectre.Console;

namespace Microsoft.ML.Peer.Examples;

/// <summary>
/// Shows a PEER trainer's progress as a Spectre.Console progress bar (step, loss, tokens/s, ETA) and keeps every
/// report for the training-curve plot. When the output is redirected (CI, a log file) it prints plain lines instead.
/// </summary>
public sealed class TrainingProgressDisplay
{
    private readonly List<PeerTrainingProgress> _reports = new();

    /// <summary>Every report received, in order.</summary>
    public IReadOnlyList<PeerTrainingProgress> Reports => _reports;

    /// <summary>Runs <paramref name="fit"/> (which must pass the given progress sink to the trainer) under a progress bar.</summary>
    public T Run<T>(string title, Func<IProgress<PeerTrainingProgress>, T> fit)
    {
        if (!AnsiConsole.Profile.Capabilities.Interactive)
        {
            return fit(new SynchronousProgress(p =>
            {
                _reports.Add(p);
                AnsiConsole.WriteLine(Describe(p));
            }));
        }
        T result = default!;
        AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(),
                new SpinnerColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(title), maxValue: 1);
                result = fit(new SynchronousProgress(p =>
                {
                    _reports.Add(p);
                    task.MaxValue = Math.Max(1, p.TotalSteps);
                    task.Value = p.Step;
                    task.Description = Markup.Escape($"{title}: {Describe(p)}");
                }));
                task.Value = task.MaxValue;
            });
        return result;
    }

    private static string Describe(PeerTrainingProgress p) =>
        FormattableString.Invariant(
            $"epoch {p.Epoch}, step {p.Step}/{p.TotalSteps}, loss {p.Loss:F4}, {p.TokensPerSecond:N0} tokens/s, ETA {p.Remaining:mm\\:ss}");

    // Progress<T> would post reports to the thread pool, out of order and after Fit returns; this calls back inline.
    private sealed class SynchronousProgress(Action<PeerTrainingProgress> report) : IProgress<PeerTrainingProgress>
    {
        public void Report(PeerTrainingProgress value) => report(value);
    }
}
