using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peer.Models;
using Spectre.Console;

namespace Microsoft.ML.Peer.Examples;

/// <summary>
/// The steps the classification examples share: options from the command line, training under a progress bar,
/// evaluation with ML.NET's evaluator, save and reload with a check that scores are unchanged, the training-curve plot
/// and the side-by-side comparison with ML.NET's own text classifier.
/// </summary>
public static class ClassifierWalkthrough
{
    /// <summary>The command-line options every classification example accepts.</summary>
    public static readonly IReadOnlyDictionary<string, string> Options = new Dictionary<string, string>
    {
        ["epochs"] = "passes over the training data (default: the trainer's, 3)",
        ["minutes"] = "train for this long instead of a number of epochs",
        ["ffn"] = "feed-forward kind: ProductKeyMemory (default), Peer, Dense or MoE",
        ["experts"] = "experts N = n² of the PKM or PEER layer (default 16384 = 128²)",
        ["output"] = "folder for the model and the plot",
    };

    /// <summary>The trainer options the command line asks for; null after printing why they are wrong.</summary>
    public static PeerTextClassificationTrainer.Options? TrainerOptions(ExampleArguments arguments)
    {
        var options = new PeerTextClassificationTrainer.Options();
        try
        {
            options.Epochs = arguments.Integer("epochs", options.Epochs);
            if (arguments.Number("minutes", 0) is > 0 and var minutes) options.TimeBudget = TimeSpan.FromMinutes(minutes);
            options.Experts = arguments.Integer("experts", options.Experts);
            string ffn = arguments.Text("ffn", options.FeedForward.ToString());
            options.FeedForward = Enum.TryParse<FeedForwardKind>(ffn, ignoreCase: true, out var kind) && Enum.IsDefined(kind)
                ? kind
                : throw new FormatException($"--ffn must be one of {string.Join(", ", Enum.GetNames<FeedForwardKind>())}; got '{ffn}'.");
            return options;
        }
        catch (FormatException e)
        {
            Console.Error.WriteLine(e.Message);
            return null;
        }
    }

    public static void DescribeModel(PeerTextClassificationTrainer.Options options) =>
        AnsiConsole.WriteLine($"  model: {options.FeedForward} feed-forward" +
            (options.FeedForward is FeedForwardKind.Peer or FeedForwardKind.ProductKeyMemory
                ? $" with N = {options.Experts:N0} {(options.FeedForward == FeedForwardKind.Peer ? "experts" : "slots")}, h = {options.Heads}, k = {options.TopK}"
                : "") +
            $", d = {options.ModelDimension}, {options.Layers} block(s), " +
            (options.Truncation == TextTruncation.KeepStartAndEnd
                ? $"the first and last {options.MaxSequenceLength / 2} tokens of each longer text"
                : $"the first {options.MaxSequenceLength} tokens of each text"));

    /// <summary>Fits <paramref name="retrain"/> under a progress bar, saves the model and evaluates it on
    /// <paramref name="test"/>.</summary>
    public static TrainedClassifier TrainAndEvaluate(MLContext mlContext, PeerTextClassificationTrainer.Options options, IDataView train,
        IDataView test, Func<MLContext, IDataView, PeerTextClassificationTrainer.Options, ITransformer> retrain, string modelPath,
        string title)
    {
        var progress = new TrainingProgressDisplay();
        var clock = Stopwatch.StartNew();
        var model = progress.Run("Training", sink =>
        {
            options.Progress = sink;
            return retrain(mlContext, train, options);
        });
        var fitTime = clock.Elapsed;
        Directory.CreateDirectory(Path.GetDirectoryName(modelPath)!);
        mlContext.Model.SaveAtomically(model, train.Schema, modelPath);

        var metrics = mlContext.MulticlassClassification.Evaluate(model.Transform(test));
        AnsiConsole.WriteLine();
        AnsiConsole.MarkupLine($"[bold]{Markup.Escape(title)}[/]: micro-accuracy [green]{metrics.MicroAccuracy:F4}[/], macro-accuracy {metrics.MacroAccuracy:F4}, log-loss {metrics.LogLoss:F4}, fit {fitTime.TotalSeconds:F1} s");
        return new TrainedClassifier(model, metrics, fitTime, progress.Reports);
    }

    /// <summary>Reloads the saved model in a fresh MLContext and reports whether its scores on <paramref name="sample"/> are
    /// bit-identical.</summary>
    public static bool CheckReload(ITransformer model, string modelPath, IDataView sample, int rows = 200)
    {
        var reloaded = new MLContext().Model.Load(modelPath, out _);
        var before = model.Transform(sample).GetColumn<float[]>("Score").Take(rows).SelectMany(s => s).ToArray();
        var after = reloaded.Transform(sample).GetColumn<float[]>("Score").Take(rows).SelectMany(s => s).ToArray();
        bool identical = before.SequenceEqual(after);
        AnsiConsole.WriteLine($"Saved {modelPath} ({new FileInfo(modelPath).Length / 1024.0 / 1024.0:F1} MiB); reloaded in a new MLContext, scores identical on {Math.Min(rows, before.Length / Math.Max(1, ((VectorDataViewType)model.GetOutputSchema(sample.Schema)["Score"].Type).Size))} rows: {identical}");
        return identical;
    }

    /// <summary>Fits ML.NET's FeaturizeText + SdcaMaximumEntropy on the same split and prints both models side by side.</summary>
    public static void CompareWithBaseline(MLContext mlContext, IDataView train, IDataView test, TrainedClassifier peer)
    {
        AnsiConsole.MarkupLine("[bold]Fitting ML.NET's FeaturizeText + SdcaMaximumEntropy on the same split...[/]");
        var baseline = MLNetTextBaseline.Run(mlContext, train, test);
        var table = new Table().AddColumns("model", "micro-accuracy", "macro-accuracy", "log-loss", "fit time (s)");
        table.AddRow("PEER text classifier", $"{peer.Metrics.MicroAccuracy:F4}", $"{peer.Metrics.MacroAccuracy:F4}",
            $"{peer.Metrics.LogLoss:F4}", $"{peer.FitTime.TotalSeconds:F1}");
        table.AddRow("FeaturizeText + SdcaMaximumEntropy", $"{baseline.MicroAccuracy:F4}", $"{baseline.MacroAccuracy:F4}",
            $"{baseline.LogLoss:F4}", $"{baseline.FitTime.TotalSeconds:F1}");
        AnsiConsole.Write(table);
        AnsiConsole.WriteLine($"PEER fit time is {peer.FitTime / baseline.FitTime:P1} of the baseline's; micro-accuracy difference {peer.Metrics.MicroAccuracy - baseline.MicroAccuracy:+0.0000;-0.0000}.");
    }
}

/// <summary>A trained classification pipeline with its test metrics, fit time and training reports.</summary>
public sealed record TrainedClassifier(ITransformer Model, MulticlassClassificationMetrics Metrics, TimeSpan FitTime,
    IReadOnlyList<PeerTrainingProgress> Reports);
