using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Peer;

namespace ClassifierBenchmarks;

/// <summary>One trainer's result on one set.</summary>
public sealed record TrainerResult(string Set, string Trainer, double MicroAccuracy, double MacroAccuracy, double LogLoss,
    TimeSpan FitTime)
{
    /// <summary>On a test part: each test row's log-loss and whether its predicted label was right, in the test part's order
    /// (null in cross-validation).</summary>
    public IReadOnlyList<(double LogLoss, bool Correct)>? Rows { get; init; }

    /// <summary>In cross-validation: each fold's log-loss, in ML.NET's fold order (null on a test part).</summary>
    public IReadOnlyList<double>? FoldLogLoss { get; init; }
}

/// <summary>
/// Ours minus another pipeline's log-loss on each fold of the same cross-validation (ML.NET gives every pipeline the same
/// folds): how the difference spreads over parts of the training documents the size of a fold.
/// </summary>
public sealed record FoldDifference(string Set, string Ours, string Other, IReadOnlyList<double> LogLoss)
{
    public double Mean => LogLoss.Average();

    /// <summary>The folds where ours has the lower log-loss.</summary>
    public int OursLower => LogLoss.Count(d => d < 0);
}

/// <summary>
/// Ours minus another trainer's test log-loss and micro-accuracy on the same rows, with 95% intervals from resampling the test
/// part's documents (<see cref="TextExample.Group"/>) with replacement: the rows of one document are not independent draws,
/// so a set with a few hundred documents has wide intervals however many rows they are cut into.
/// </summary>
public sealed record PairedDifference(string Set, string Ours, string Other, int Documents, double LogLoss, double LogLossLow,
    double LogLossHigh, double MicroAccuracy, double MicroAccuracyLow, double MicroAccuracyHigh);

/// <summary>
/// Fits our trainer with its defaults and ML.NET's stock text classifiers (FeaturizeText + SdcaMaximumEntropy,
/// LbfgsMaximumEntropy, LightGBM) on the same split of each set, and evaluates each on the same test rows.
/// </summary>
public static class ClassifierSuite
{
    /// <summary>The trainers, each a pipeline from the text and label columns to Score and PredictedLabel.</summary>
    public static IReadOnlyList<(string Name, Func<MLContext, IEstimator<ITransformer>> Build)> Trainers { get; } =
        new (string, Func<MLContext, IEstimator<ITransformer>>)[]
    {
        ("PEER (defaults)", ml => ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.Peer().TextClassification(PeerDefaults()))),
        ("FeaturizeText + SdcaMaximumEntropy", ml => Stock(ml).Append(ml.MulticlassClassification.Trainers.SdcaMaximumEntropy())),
        ("FeaturizeText + LbfgsMaximumEntropy", ml => Stock(ml).Append(ml.MulticlassClassification.Trainers.LbfgsMaximumEntropy())),
        ("FeaturizeText + LightGbm", ml => Stock(ml).Append(ml.MulticlassClassification.Trainers.LightGbm())),
    };

    /// <summary>
    /// Our trainer's defaults, told only the suite's columns and which column groups the rows (as CrossValidate's
    /// samplingKeyColumnName), so that its held-out validation rows are whole documents.
    /// </summary>
    public static PeerTextClassificationTrainer.Options PeerDefaults() => new()
    {
        LabelColumnName = "Label", TextColumnName = "Text", SamplingKeyColumnName = nameof(TextExample.Group),
    };

    private static IEstimator<ITransformer> Stock(MLContext ml) =>
        ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.Transforms.Text.FeaturizeText("Features", "Text"));

    /// <summary>The parts of trainer names in <paramref name="parts"/> that name none of <see cref="Trainers"/>.</summary>
    public static List<string> UnknownTrainers(IEnumerable<string> parts) =>
        parts.Where(part => !Trainers.Any(t => Names(t.Name, new[] { part }))).ToList();

    // Whether one of the parts (case-insensitive) is in the trainer's name: how --trainers picks trainers.
    private static bool Names(string trainer, IEnumerable<string> parts) =>
        parts.Any(part => trainer.Contains(part, StringComparison.OrdinalIgnoreCase));

    /// <summary>Every trainer on <paramref name="set"/> (or those whose names contain one of <paramref name="only"/>), then each of
    /// <paramref name="configurations"/> of ours (none by default), one after the other in this process. The configurations are
    /// measured on the test part, for a setting chosen elsewhere (by cross-validation); they are not a way to choose one.</summary>
    public static List<TrainerResult> Run(TextSet set, int seed = 1, Action<string>? log = null, IReadOnlyCollection<string>? only = null,
        IEnumerable<PeerConfiguration>? configurations = null)
    {
        var results = new List<TrainerResult>();
        foreach (var (name, build) in Trainers)
        {
            if (only is { Count: > 0 } && !Names(name, only)) continue;
            results.Add(FitAndEvaluate(set, name, set.Train, build, seed, log));
        }
        foreach (var configuration in configurations ?? Enumerable.Empty<PeerConfiguration>())
            results.Add(FitAndEvaluate(set, $"PEER ({configuration.Name})", set.Train, ml => ml.Transforms.Conversion.MapValueToKey("Label")
                .Append(ml.Peer().TextClassification(configuration.Options())), seed, log));
        return results;
    }

    /// <summary>
    /// K-fold cross-validation of each PEER configuration, then of the stock trainers whose names contain one of
    /// <paramref name="stock"/> (none by default), on the set's training part only (the test part is never read), with ML.NET's
    /// CrossValidate and folds grouped by <see cref="TextExample.Group"/>, so no document straddles two folds. Every pipeline
    /// gets the same folds. The fit time is the whole cross-validation's time divided by the folds (scoring a fold is a small
    /// part of it).
    /// </summary>
    public static List<TrainerResult> CrossValidate(TextSet set, IEnumerable<PeerConfiguration> configurations, int folds, int seed = 1,
        Action<string>? log = null, IReadOnlyCollection<string>? stock = null)
    {
        CheckFolds(folds);
        var pipelines = configurations
            .Select(c => ($"PEER ({c.Name})", (Func<MLContext, IEstimator<ITransformer>>)(ml =>
                ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.Peer().TextClassification(c.Options())))))
            .Concat(Trainers.Where(t => !t.Name.StartsWith("PEER", StringComparison.Ordinal) && stock is not null && Names(t.Name, stock)));
        var results = new List<TrainerResult>();
        foreach (var (name, build) in pipelines)
        {
            var ml = Context(seed, log);
            var train = ml.Data.LoadFromEnumerable(set.Train);
            log?.Invoke($"  {set.Name}: {folds}-fold cross-validation of {name} on {set.Train.Count:N0} training rows ...");
            var clock = Stopwatch.StartNew();
            var cv = ml.MulticlassClassification.CrossValidate(train, build(ml), folds, samplingKeyColumnName: nameof(TextExample.Group),
                seed: seed);
            var perFold = clock.Elapsed / folds;
            var result = new TrainerResult(set.Name, name, cv.Average(f => f.Metrics.MicroAccuracy),
                cv.Average(f => f.Metrics.MacroAccuracy), cv.Average(f => f.Metrics.LogLoss), perFold)
            {
                FoldLogLoss = cv.Select(f => f.Metrics.LogLoss).ToList(),
            };
            results.Add(result);
            log?.Invoke($"  {set.Name}: {name}: micro-accuracy {result.MicroAccuracy:F4} " +
                        $"(folds {string.Join(" ", cv.Select(f => f.Metrics.MicroAccuracy.ToString("F4")))}), macro {result.MacroAccuracy:F4}, " +
                        $"log-loss {result.LogLoss:F4} (folds {string.Join(" ", result.FoldLogLoss.Select(l => l.ToString("F4")))}), " +
                        $"{perFold.TotalSeconds:F1} s per fold");
            foreach (var fold in cv) (fold.Model as IDisposable)?.Dispose();
        }
        return results;
    }

    /// <summary>
    /// The few-label experiment: for each fraction, that share of each class's training rows keeps its label (at least one per
    /// class, seeded) and the rest is unlabeled text. Fits our defaults and SDCA on the labelled rows alone, and our trainer
    /// starting from a PEER language model pre-trained once on every training text (<paramref name="pretraining"/>), and
    /// evaluates all on the set's test part. The keys are made from every label of the set, so a class missing from a small
    /// sample still counts against the trainer that never saw it.
    /// </summary>
    public static List<TrainerResult> FewLabels(TextSet set, IReadOnlyList<double> fractions, PeerLanguageModelTrainer.Options pretraining,
        int seed = 1, Action<string>? log = null)
    {
        var results = new List<TrainerResult>();
        var lmContext = Context(seed, log);
        log?.Invoke($"  {set.Name}: pre-training a language model on all {set.Train.Count:N0} training texts ...");
        var clock = Stopwatch.StartNew();
        using var languageModel = lmContext.Peer().LanguageModel(pretraining).Fit(lmContext.Data.LoadFromEnumerable(set.Train));
        var pretrainTime = clock.Elapsed;
        results.Add(new TrainerResult(set.Name, "language model pre-training (all training texts)", double.NaN, double.NaN, double.NaN,
            pretrainTime));
        log?.Invoke($"  {set.Name}: pre-training took {pretrainTime.TotalSeconds:F1} s");
        foreach (var fraction in fractions)
        {
            var random = new Random(seed);
            var labelled = set.Train.GroupBy(r => r.Label).OrderBy(g => g.Key, StringComparer.Ordinal).SelectMany(g =>
            {
                var rows = g.ToArray();
                random.Shuffle(rows);
                return rows.Take(Math.Max(1, (int)Math.Round(rows.Length * fraction)));
            }).ToList();
            string share = $"{fraction:P0} labels ({labelled.Count:N0} rows)";
            var trainers = new (string Name, Func<MLContext, IEstimator<ITransformer>> Build)[]
            {
                ($"PEER (defaults), {share}", ml => ml.Peer().TextClassification(PeerDefaults())),
                ($"PEER from the pre-trained language model, {share}", ml =>
                {
                    var options = PeerDefaults();
                    options.LanguageModel = languageModel;
                    return ml.Peer().TextClassification(options);
                }),
                ($"FeaturizeText + SdcaMaximumEntropy, {share}", ml => ml.Transforms.Text.FeaturizeText("Features", "Text")
                    .Append(ml.MulticlassClassification.Trainers.SdcaMaximumEntropy())),
            };
            foreach (var (name, build) in trainers)
                results.Add(FitAndEvaluate(set, name, labelled, ml => ml.Transforms.Conversion.MapValueToKey("Label",
                    keyData: ml.Data.LoadFromEnumerable(set.Train.Concat(set.Test).Select(r => new { r.Label }))).Append(build(ml)), seed, log));
        }
        return results;
    }

    /// <summary>Fits <paramref name="build"/>'s pipeline on <paramref name="train"/> in a fresh context, evaluates it on the set's test
    /// part and logs the result as it comes, so a run stopped part-way still leaves its finished fits in the log.</summary>
    private static TrainerResult FitAndEvaluate(TextSet set, string name, IReadOnlyList<TextExample> train,
        Func<MLContext, IEstimator<ITransformer>> build, int seed, Action<string>? log)
    {
        var ml = Context(seed, log);
        log?.Invoke($"  {set.Name}: fitting {name} on {train.Count:N0} rows ...");
        var clock = Stopwatch.StartNew();
        var model = build(ml).Fit(ml.Data.LoadFromEnumerable(train));
        var fitTime = clock.Elapsed;
        var scored = model.Transform(ml.Data.LoadFromEnumerable(set.Test));
        var metrics = ml.MulticlassClassification.Evaluate(scored);
        var rows = RowScores(scored);
        log?.Invoke($"  {set.Name}: {name}: micro-accuracy {metrics.MicroAccuracy:F4}, macro {metrics.MacroAccuracy:F4}, " +
                    $"log-loss {metrics.LogLoss:F4}, fit {fitTime.TotalSeconds:F1} s");
        // The rows' own figures must give the evaluator's, or the paired differences would compare something else.
        if (Math.Abs(rows.Average(r => r.LogLoss) - metrics.LogLoss) > 1e-6 || Math.Abs(rows.Average(r => r.Correct ? 1.0 : 0) - metrics.MicroAccuracy) > 1e-9)
            throw new InvalidOperationException($"{set.Name} {name}: the rows' log-loss {rows.Average(r => r.LogLoss)} or accuracy do not " +
                                                $"match the evaluator's {metrics.LogLoss}, {metrics.MicroAccuracy}.");
        (model as IDisposable)?.Dispose();
        foreach (var part in (model as IEnumerable<ITransformer>) ?? Array.Empty<ITransformer>()) (part as IDisposable)?.Dispose();
        return new TrainerResult(set.Name, name, metrics.MicroAccuracy, metrics.MacroAccuracy, metrics.LogLoss, fitTime) { Rows = rows };
    }

    // ML.NET's multiclass evaluator clamps a row's probability of its label here before the logarithm.
    private const double LogLossFloor = 1e-15;

    /// <summary>Each scored row's log-loss (−ln of its label's probability, as ML.NET's evaluator computes it) and whether the
    /// highest score is its label (the first highest, as the evaluator breaks ties).</summary>
    private static List<(double LogLoss, bool Correct)> RowScores(IDataView scored)
    {
        var rows = new List<(double, bool)>();
        using var cursor = scored.GetRowCursor(new[] { scored.Schema["Label"], scored.Schema["Score"] });
        var labelGetter = cursor.GetGetter<uint>(scored.Schema["Label"]);
        var scoreGetter = cursor.GetGetter<Microsoft.ML.Data.VBuffer<float>>(scored.Schema["Score"]);
        uint label = 0;
        var score = default(Microsoft.ML.Data.VBuffer<float>);
        while (cursor.MoveNext())
        {
            labelGetter(ref label);
            scoreGetter(ref score);
            var values = score.DenseValues().ToArray();
            int truth = (int)label - 1, best = 0;
            for (int c = 1; c < values.Length; c++) if (values[c] > values[best]) best = c;
            double p = truth >= 0 && truth < values.Length ? values[truth] : 0;
            rows.Add((-Math.Log(Math.Max(p, LogLossFloor)), best == truth));
        }
        return rows;
    }

    /// <summary>
    /// <paramref name="ours"/> against each other result of <paramref name="results"/> that has test rows (<see cref="PairedDifference"/>):
    /// <paramref name="resamples"/> resamples of the test part's documents, seeded, the same ones for every trainer.
    /// </summary>
    public static List<PairedDifference> PairedDifferences(TextSet set, IReadOnlyList<TrainerResult> results, string ours = "PEER (defaults)",
        int resamples = 2000, int seed = 1)
    {
        var mine = results.FirstOrDefault(r => r.Trainer == ours && r.Rows is not null);
        if (mine is null) return new List<PairedDifference>();
        var documents = set.Test.Select((row, i) => (row.Group, i)).GroupBy(x => x.Group).Select(g => g.Select(x => x.i).ToArray()).ToArray();
        var draws = new int[resamples][];
        var random = new Random(seed);
        for (int b = 0; b < resamples; b++) draws[b] = Enumerable.Range(0, documents.Length).Select(_ => random.Next(documents.Length)).ToArray();
        var differences = new List<PairedDifference>();
        foreach (var other in results.Where(r => r != mine && r.Rows is not null))
        {
            double[] loss = mine.Rows!.Zip(other.Rows!, (a, b) => a.LogLoss - b.LogLoss).ToArray();
            double[] right = mine.Rows!.Zip(other.Rows!, (a, b) => (a.Correct ? 1.0 : 0) - (b.Correct ? 1.0 : 0)).ToArray();
            (double Low, double High) Interval(double[] perRow)
            {
                var means = draws.Select(draw =>
                {
                    double sum = 0; int count = 0;
                    foreach (int d in draw) foreach (int i in documents[d]) { sum += perRow[i]; count++; }
                    return sum / count;
                }).Order().ToArray();
                return (means[(int)(0.025 * (resamples - 1))], means[(int)Math.Ceiling(0.975 * (resamples - 1))]);
            }
            var (lossLow, lossHigh) = Interval(loss);
            var (accuracyLow, accuracyHigh) = Interval(right);
            differences.Add(new PairedDifference(set.Name, mine.Trainer, other.Trainer, documents.Length, loss.Average(), lossLow, lossHigh,
                right.Average(), accuracyLow, accuracyHigh));
        }
        return differences;
    }

    /// <summary><paramref name="folds"/> when cross-validation can use it (at least 2); otherwise throws, naming the option.</summary>
    public static int CheckFolds(int folds) => folds >= 2
        ? folds
        : throw new ArgumentOutOfRangeException(nameof(folds), folds, $"--cv expects at least 2 folds; got {folds}.");

    /// <summary>
    /// The first of <paramref name="results"/> (cross-validated, of one set) minus each other one, fold by fold.
    /// </summary>
    public static List<FoldDifference> FoldDifferences(IReadOnlyList<TrainerResult> results)
    {
        if (results.Count == 0 || results[0].FoldLogLoss is not { } mine) return new List<FoldDifference>();
        return results.Skip(1).Where(r => r.FoldLogLoss is { } f && f.Count == mine.Count)
            .Select(r => new FoldDifference(results[0].Set, results[0].Trainer, r.Trainer, mine.Zip(r.FoldLogLoss!, (a, b) => a - b).ToList()))
            .ToList();
    }

    /// <summary>One line per fold difference, as the command prints them.</summary>
    public static string Describe(FoldDifference d) =>
        $"  {d.Set}: {d.Ours} − {d.Other}, log-loss fold by fold: mean {d.Mean:+0.0000;−0.0000}, from {d.LogLoss.Min():+0.0000;−0.0000} " +
        $"to {d.LogLoss.Max():+0.0000;−0.0000}; ours lower in {d.OursLower} of {d.LogLoss.Count} folds";

    /// <summary>One line per paired difference, as the command prints them.</summary>
    public static string Describe(PairedDifference d) =>
        $"  {d.Set}: {d.Ours} − {d.Other} on the same {d.Documents:N0} test documents: log-loss {d.LogLoss:+0.0000;−0.0000} " +
        $"[{d.LogLossLow:+0.0000;−0.0000}, {d.LogLossHigh:+0.0000;−0.0000}], micro-accuracy {d.MicroAccuracy:+0.0000;−0.0000} " +
        $"[{d.MicroAccuracyLow:+0.0000;−0.0000}, {d.MicroAccuracyHigh:+0.0000;−0.0000}] (95%, documents resampled)";

    /// <summary>Whether the trainers' own log (epochs, validation loss, the epoch kept) is written to the log too.</summary>
    public static bool Verbose { get; set; }

    private static MLContext Context(int seed, Action<string>? log)
    {
        var ml = new MLContext(seed);
        if (Verbose && log is not null)
            ml.Log += (_, e) => { if (e.Source.Contains("Peer", StringComparison.Ordinal)) log($"    {e.Message}"); };
        return ml;
    }

    /// <summary>The table the command prints: one row per set and trainer.</summary>
    public static string Table(IEnumerable<TrainerResult> results)
    {
        var header = new[] { "set", "trainer", "micro-acc", "macro-acc", "log-loss", "fit (s)" };
        var rows = results.Select(r => new[]
        {
            r.Set, r.Trainer, Cell(r.MicroAccuracy), Cell(r.MacroAccuracy), Cell(r.LogLoss),
            r.FitTime.TotalSeconds.ToString("F1"),
        }).ToList();
        var widths = header.Select((h, i) => rows.Select(r => r[i].Length).Append(h.Length).Max()).ToArray();
        string Line(string[] cells) => "| " + string.Join(" | ", cells.Select((c, i) => c.PadRight(widths[i]))) + " |";
        return string.Join('\n', new[] { Line(header), "|" + string.Join("|", widths.Select(w => new string('-', w + 2))) + "|" }
            .Concat(rows.Select(Line)));
    }

    private static string Cell(double value) => double.IsNaN(value) ? "-" : value.ToString("F4");

    private static JsonNode? Number(double value) => double.IsNaN(value) ? null : JsonValue.Create(value);

    /// <summary>The set's description and results as the JSON written to artifacts/classifier/&lt;set&gt;.json.</summary>
    public static JsonObject Json(TextSet set, IEnumerable<TrainerResult> results, bool quick, int seed = 1) => new()
    {
        ["seed"] = seed,
        ["set"] = set.Name,
        ["source"] = set.Source,
        ["labelling"] = set.Labelling,
        ["split"] = set.Split,
        ["quick"] = quick,
        ["train_rows"] = set.Train.Count,
        ["test_rows"] = set.Test.Count,
        ["classes"] = set.Classes,
        ["date_utc"] = DateTime.UtcNow.ToString("u"),
        ["results"] = new JsonArray(results.Select(r => (JsonNode)new JsonObject
        {
            ["trainer"] = r.Trainer,
            ["micro_accuracy"] = Number(r.MicroAccuracy),
            ["macro_accuracy"] = Number(r.MacroAccuracy),
            ["log_loss"] = Number(r.LogLoss),
            ["fit_seconds"] = r.FitTime.TotalSeconds,
            ["fold_log_loss"] = r.FoldLogLoss is { } folds ? new JsonArray(folds.Select(v => (JsonNode)JsonValue.Create(v)!).ToArray()) : null,
        }).ToArray()),
        ["paired_differences"] = new JsonArray(PairedDifferences(set, results.ToList()).Select(d => (JsonNode)new JsonObject
        {
            ["ours"] = d.Ours,
            ["other"] = d.Other,
            ["test_documents"] = d.Documents,
            ["log_loss"] = d.LogLoss,
            ["log_loss_95"] = new JsonArray(d.LogLossLow, d.LogLossHigh),
            ["micro_accuracy"] = d.MicroAccuracy,
            ["micro_accuracy_95"] = new JsonArray(d.MicroAccuracyLow, d.MicroAccuracyHigh),
        }).ToArray()),
        ["fold_differences"] = new JsonArray(FoldDifferences(results.ToList()).Select(d => (JsonNode)new JsonObject
        {
            ["ours"] = d.Ours,
            ["other"] = d.Other,
            ["log_loss_by_fold"] = new JsonArray(d.LogLoss.Select(v => (JsonNode)JsonValue.Create(v)!).ToArray()),
        }).ToArray()),
    };
}
