using System.Globalization;
using System.Text.Json;
using Microsoft.ML.Peer.Data;
using Microsoft.ML.Peer.Training;

namespace PaperReproduction;

/// <summary>
/// --tune-lr: the peak learning rate of a budget, chosen once for the dense model and then used by every run. Each rate
/// trains dense for the steps of the budget's low compute level (the main level's where it has none) on nine tenths of the training
/// documents and is scored on the other tenth,
/// so the choice never sees the validation split the experiments report.
/// </summary>
internal static class LearningRateTuning
{
    public static int Run(Budget budget, IReadOnlyList<BrownDocument> trainDocs, CompactTokenizer tokenizer, string grid, string output)
    {
        double[] rates;
        try
        {
            rates = grid.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(t => double.Parse(t, NumberStyles.Float, CultureInfo.InvariantCulture)).ToArray();
        }
        catch (FormatException)
        {
            Console.Error.WriteLine($"--tune-lr expects comma-separated numbers such as 1.5e-3,3e-3,6e-3; got '{grid}'.");
            return 2;
        }
        if (rates.Length == 0 || rates.Any(r => !(r > 0) || double.IsInfinity(r)))
        {
            Console.Error.WriteLine($"--tune-lr needs positive finite learning rates; got '{grid}'.");
            return 2;
        }
        var (fit, heldOut) = BrownCorpus.SplitByDocument(trainDocs, validationFraction: 0.1, seed: 1);
        int[] Stream(IEnumerable<BrownDocument> docs)
            => docs.SelectMany(d => tokenizer.Encode(d.Text).Append(tokenizer.EndOfTextId)).ToArray();
        var fitTokens = Stream(fit);
        var heldOutTokens = Stream(heldOut);
        var dense = RunSpec.All[0];
        // The low compute level's schedule where the budget has one: a third of the cost of tuning at the main level.
        var tuning = budget.LowReferenceSteps > 0 ? dense with { LowCompute = true } : dense;
        int steps = tuning.Steps(budget);
        Console.WriteLine(
            $"Tuning the peak learning rate of {dense.Name} for budget {budget.Name}: {steps} steps on {fitTokens.Length:N0} tokens " +
                          $"({fit.Count} of the training documents), scored on the other {heldOut.Count} ({heldOutTokens.Length:N0} tokens)");
        var scores = new List<(double Rate, double Perplexity, double Seconds)>();
        foreach (double rate in rates)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var options = budget.Training(steps);
            options.LearningRate = rate;
            using var tuned = new LanguageModelTrainingLoop(dense.ModelOptions(budget), options);
            var sampler = new TokenBatchSampler(fitTokens, budget.BatchSize, budget.SequenceLength, Budget.Seed);
            double loss = double.NaN;
            try
            {
                while (tuned.Step < steps) loss = tuned.TrainStep(sampler);
                var evaluation = tuned.Evaluate(heldOutTokens);
                scores.Add((rate, evaluation.Perplexity, clock.Elapsed.TotalSeconds));
                Console.WriteLine($"  lr {rate.ToString(CultureInfo.InvariantCulture),-8} final training loss {loss:F3}, held-out perplexity {evaluation.Perplexity:F2} ({clock.Elapsed.TotalSeconds:F0} s)");
            }
            catch (InvalidOperationException e)
            {
                scores.Add((rate, double.PositiveInfinity, clock.Elapsed.TotalSeconds));
                Console.WriteLine($"  lr {rate.ToString(CultureInfo.InvariantCulture),-8} diverged: {e.Message}");
            }
        }
        var best = scores.MinBy(s => s.Perplexity);
        Console.WriteLine($"Best: {best.Rate.ToString(CultureInfo.InvariantCulture)} (held-out perplexity {best.Perplexity:F2}). Set it as the budget's LearningRate in ExperimentPlan.cs.");
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "lr-tuning.json"), JsonSerializer.Serialize(new
        {
            budget = budget.Name, run = dense.Name, steps, fit_tokens = fitTokens.Length, held_out_tokens = heldOutTokens.Length,
            results = scores.Select(s => new
            {
                learning_rate = s.Rate,
                held_out_perplexity = double.IsFinite(s.Perplexity) ? s.Perplexity : (double?)null, seconds = s.Seconds
            }),
            best = best.Rate,
        }, new JsonSerializerOptions { WriteIndented = true }));
        return 0;
    }
}
