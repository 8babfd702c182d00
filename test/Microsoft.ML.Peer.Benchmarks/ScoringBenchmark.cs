using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.ML.Data;
using Microsoft.ML.Peer.Data;
using Microsoft.ML.Trainers;

namespace Microsoft.ML.Peer.Benchmarks;

/// <summary>
/// What an ML.NET user feels first: how fast a trained model scores. The default PEER spam classifier (its pipeline as
/// the SpamDetection example builds it) against ML.NET's FeaturizeText + SdcaMaximumEntropy, on the same SpamAssassin
/// test rows, measured side by side and interleaved: Transform throughput over the whole test set, and single-row
/// PredictionEngine latency. Then where the PEER model's time per row goes: tokenizing, the model's forward pass, and
/// ML.NET's row plumbing (the rest).
/// </summary>
internal static class ScoringBenchmark
{
    private sealed class Mail
    {
        public string Text { get; set; } = "";

        public string Label { get; set; } = "";
    }

    private sealed class Prediction
    {
        public float[] Score { get; set; } = Array.Empty<float>();

        public string PredictedLabel { get; set; } = "";
    }

    public static JsonObject Run(BenchmarkSettings settings)
    {
        var ml = new MLContext(seed: 1);
        var mails = SpamAssassinCorpus.Load().Select(m => new Mail { Text = m.Text, Label = m.IsSpam ? "spam" : "ham" }).ToList();
        var split = ml.Data.TrainTestSplit(ml.Data.LoadFromEnumerable(mails), testFraction: 0.2, seed: 7);
        var test = ml.Data.CreateEnumerable<Mail>(split.TestSet, reuseRowObject: false).ToList();
        Console.WriteLine($"SpamAssassin: {mails.Count:N0} mails, {test.Count:N0} test rows (TrainTestSplit 0.2, seed 7)");

        var peerPipeline = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.Peer().TextClassification(labelColumnName: "Label", textColumnName: "Text"))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
        // The stock model's scoring cost is its featurizer's and its weight vector's, which the number of SDCA passes does
        // not change; the passes are capped so the benchmark fits in minutes (the uncapped fit takes about 9 here).
        var stockPipeline = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.Transforms.Text.FeaturizeText("Features", "Text"))
            .Append(ml.MulticlassClassification.Trainers.SdcaMaximumEntropy(new SdcaMaximumEntropyMulticlassTrainer.Options
            {
                LabelColumnName = "Label", FeatureColumnName = "Features", MaximumNumberOfIterations = settings.SdcaIterations,
            }))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));

        var models = new (string Name, ITransformer Model, double FitSeconds)[2];
        foreach (var (i, name, pipeline) in new[] { (0, "peer", (IEstimator<ITransformer>)peerPipeline), (1, "sdca", stockPipeline) })
        {
            Console.WriteLine($"fitting {name}...");
            long start = Stopwatch.GetTimestamp();
            var model = pipeline.Fit(split.TrainSet);
            models[i] = (name, model, Samples.Milliseconds(start, Stopwatch.GetTimestamp()) / 1000);
        }
        var accuracy = models.ToDictionary(m => m.Name,
            m => ml.MulticlassClassification.Evaluate(m.Model.Transform(split.TestSet), "Label").MicroAccuracy);

        // Throughput: the whole test set through Transform, reading Score and PredictedLabel of every row; the two models
        // alternate so that the machine's load falls on both alike.
        var throughput = models.ToDictionary(m => m.Name, m => new Samples(m.Name + " transform"));
        var view = ml.Data.LoadFromEnumerable(test);
        foreach (var m in models) Consume(m.Model.Transform(view));
        for (int r = 0; r < settings.Steps; r++)
            foreach (var m in r % 2 == 0 ? models : models.Reverse())
            {
                long start = Stopwatch.GetTimestamp();
                Consume(m.Model.Transform(view));
                throughput[m.Name].Add(Samples.Milliseconds(start, Stopwatch.GetTimestamp()));
            }

        // Latency: one PredictionEngine per model, one row at a time, the models alternating row by row.
        var engines = models.ToDictionary(m => m.Name, m => ml.Model.CreatePredictionEngine<Mail, Prediction>(m.Model));
        var latency = models.ToDictionary(m => m.Name, m => new Samples(m.Name + " predict"));
        foreach (var e in engines.Values) for (int i = 0; i < 20; i++) e.Predict(test[i]);
        int rows = Math.Min(settings.LatencyRows, test.Count);
        for (int i = 0; i < rows; i++)
            foreach (var name in i % 2 == 0 ? new[] { "peer", "sdca" } : new[] { "sdca", "peer" })
            {
                long start = Stopwatch.GetTimestamp();
                engines[name].Predict(test[i]);
                latency[name].Add(Samples.Milliseconds(start, Stopwatch.GetTimestamp()));
            }

        // Where the PEER model's time per row goes, on the same rows: the tokenizer alone, the forward passes of all its models alone.
        var peer = ((IEnumerable<ITransformer>)models[0].Model).OfType<PeerTextClassificationTransformer>().Single();
        var tokenize = new Samples("peer tokenize");
        var forward = new Samples("peer forward");
        var ids = new List<int[]>();
        for (int i = 0; i < rows; i++)
        {
            long start = Stopwatch.GetTimestamp();
            ids.Add(peer.Tokenizer.EncodeTruncated(test[i].Text, peer.ModelOptions.InputLength, peer.Truncation));   // as scoring reads it
            tokenize.Add(Samples.Milliseconds(start, Stopwatch.GetTimestamp()));
        }
        for (int i = 0; i < rows; i++)
        {
            long start = Stopwatch.GetTimestamp();
            foreach (var member in peer.Members) member.PredictProbabilities(new[] { ids[i] }, batchSize: 1);
            forward.Add(Samples.Milliseconds(start, Stopwatch.GetTimestamp()));
        }

        var table = new Table("measure", "PEER", "SDCA", "PEER / SDCA");
        double RowsPerSecond(string name) => test.Count / (throughput[name].Median / 1000);
        table.Add("Transform throughput (rows/s, median)", Table.Format(RowsPerSecond("peer")), Table.Format(RowsPerSecond("sdca")),
            Table.Format(RowsPerSecond("peer") / RowsPerSecond("sdca")));
        table.Add("PredictionEngine p50 (ms)", Table.Format(Percentile(latency["peer"], 0.5)), Table.Format(Percentile(latency["sdca"], 0.5)),
            Table.Format(Percentile(latency["peer"], 0.5) / Percentile(latency["sdca"], 0.5)));
        table.Add("PredictionEngine p99 (ms)", Table.Format(Percentile(latency["peer"], 0.99)), Table.Format(Percentile(latency["sdca"], 0.99)),
            Table.Format(Percentile(latency["peer"], 0.99) / Percentile(latency["sdca"], 0.99)));
        table.Add("test micro-accuracy", Table.Format(accuracy["peer"]), Table.Format(accuracy["sdca"]), "");
        table.Add("fit (s)", Table.Format(models[0].FitSeconds), Table.Format(models[1].FitSeconds), "");
        table.Print();
        double p50 = Percentile(latency["peer"], 0.5);
        double tokenizeMs = tokenize.Median, forwardMs = forward.Median;
        Console.WriteLine($"PEER per row (medians): tokenize {Table.Format(tokenizeMs)} ms, forward of its {peer.Members.Count} model(s) {Table.Format(forwardMs)} ms, "
            + $"the rest of PredictionEngine.Predict {Table.Format(p50 - tokenizeMs - forwardMs)} ms");

        return new JsonObject
        {
            ["test_rows"] = test.Count,
            ["latency_rows"] = rows,
            ["sdca_iterations"] = settings.SdcaIterations,
            ["fit_seconds"] = new JsonObject { ["peer"] = Json.Round(models[0].FitSeconds), ["sdca"] = Json.Round(models[1].FitSeconds) },
            ["micro_accuracy"] = new JsonObject { ["peer"] = Json.Round(accuracy["peer"]), ["sdca"] = Json.Round(accuracy["sdca"]) },
            ["transform_ms"] = new JsonObject { ["peer"] = throughput["peer"].ToJson(), ["sdca"] = throughput["sdca"].ToJson() },
            ["rows_per_second"] = new JsonObject
            {
                ["peer"] = Json.Round(RowsPerSecond("peer")), ["sdca"] = Json.Round(RowsPerSecond("sdca")),
                ["peer_over_sdca"] = Json.Round(RowsPerSecond("peer") / RowsPerSecond("sdca")),
            },
            ["predict_ms"] = new JsonObject
            {
                ["peer"] = new JsonObject { ["p50"] = Json.Round(p50), ["p99"] = Json.Round(Percentile(latency["peer"], 0.99)) },
                ["sdca"] = new JsonObject
                {
                    ["p50"] = Json.Round(Percentile(latency["sdca"], 0.5)), ["p99"] = Json.Round(Percentile(latency["sdca"], 0.99)),
                },
            },
            ["peer_breakdown_ms"] = new JsonObject
            {
                ["tokenize_median"] = Json.Round(tokenizeMs),
                ["forward_median"] = Json.Round(forwardMs),
                ["rest_of_predict_p50"] = Json.Round(p50 - tokenizeMs - forwardMs),
            },
        };
    }

    private static void Consume(IDataView scored)
    {
        var score = scored.Schema["Score"];
        var label = scored.Schema["PredictedLabel"];
        using var cursor = scored.GetRowCursor(new[] { score, label });
        var getScore = cursor.GetGetter<VBuffer<float>>(score);
        var getLabel = cursor.GetGetter<ReadOnlyMemory<char>>(label);
        VBuffer<float> s = default;
        ReadOnlyMemory<char> l = default;
        while (cursor.MoveNext())
        {
            getScore(ref s);
            getLabel(ref l);
        }
    }

    private static double Percentile(Samples samples, double q)
    {
        var sorted = samples.Values.Order().ToArray();
        return sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(q * sorted.Length) - 1)];
    }
}
