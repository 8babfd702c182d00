using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Training;

/// <summary>
/// Trains a <see cref="TransformerLanguageModel"/>: AdamW, warm-up + cosine schedule, gradient clipping,
/// seeded batches, checkpoints that resume to the same loss curve, validation perplexity and expert usage.
/// </summary>
internal sealed class LanguageModelTrainingLoop : TrainingLoop<TransformerLanguageModel>
{
    private const string CheckpointMagic = "PEER-LM-CHECKPOINT";
    private const int CheckpointVersion = 1;

    private readonly LanguageModelOptions _modelOptions;
    private readonly LanguageModelTrainingOptions _options;
    private readonly List<LossPoint> _history = new();

    /// <summary>Builds a fresh model from <paramref name="modelOptions"/>, initialised from the training seed.</summary>
    public LanguageModelTrainingLoop(LanguageModelOptions modelOptions, LanguageModelTrainingOptions options)
    {
        ArgumentNullException.ThrowIfNull(modelOptions);
        ArgumentNullException.ThrowIfNull(options);
        modelOptions.Validate();
        options.Validate(modelOptions.ContextLength);
        _modelOptions = modelOptions.Clone();
        _options = options.Clone();
        Start(_options, () => new TransformerLanguageModel(_modelOptions),
            model => model.ExpertTableNames().Where(t => t.Sparse).Select(t => t.Name),
            (model => model.ExpertTableNames().Select(t => t.Name), _options.ExpertLearningRateScale));
    }

    public LanguageModelTrainingOptions Options => _options.Clone();

    /// <summary>Training loss (cross-entropy) of every step taken, including those before a resume.</summary>
    public IReadOnlyList<LossPoint> History => _history;

    /// <summary>One optimizer step on the batch that belongs to the current step; returns its cross-entropy.</summary>
    public double TrainStep(TokenBatchSampler sampler)
    {
        ArgumentNullException.ThrowIfNull(sampler);
        int step = Step;
        double value = OptimizerStep(() =>
        {
            var (inputs, targets) = sampler.Batch(step);
            return Model.Loss(inputs, targets);
        }, CurrentLearningRate(),
            loss => $"Training diverged at step {step}: the loss is {loss}. Lower LearningRate (now {_options.LearningRate}).");
        _history.Add(new LossPoint(step, value));
        return value;
    }

    private double CurrentLearningRate() =>
        LearningRateSchedule.At(Step, _options.LearningRate, _options.WarmupSteps, _options.MaxSteps, _options.MinLearningRateFraction);

    /// <summary>
    /// Trains until <see cref="LanguageModelTrainingOptions.MaxSteps"/>, the time limit or cancellation, reporting progress,
    /// evaluating on <paramref name="validationTokens"/> if given and writing checkpoints if configured.
    /// Returns the final evaluation over all validation tokens (null without validation tokens).
    /// </summary>
    public LanguageModelEvaluationResult? Train(int[] trainTokens, int[]? validationTokens = null,
        Action<LanguageModelTrainingProgress>? progress = null, CancellationToken cancellation = default)
    {
        var sampler = new TokenBatchSampler(trainTokens, _options.BatchSize, _options.SequenceLength, _options.Seed);
        var clock = Stopwatch.StartNew();
        var warmupClock = new Stopwatch();
        int warmupTimedSteps = 0;
        var window = Stopwatch.StartNew();
        int windowSteps = 0;
        double windowLoss = 0;
        while (Step < _options.MaxSteps && !cancellation.IsCancellationRequested
               && (_options.TimeLimit is null || clock.Elapsed < _options.TimeLimit))
        {
            double lr = CurrentLearningRate();
            bool timed = TimesWarmup(Step);
            if (timed) warmupClock.Start();
            windowLoss += TrainStep(sampler);
            if (timed) { warmupClock.Stop(); warmupTimedSteps++; }
            windowSteps++;
            if (_options.TimeBudget is { } budget && Step == _options.WarmupSteps && warmupTimedSteps > 0)
                FitStepsToBudget(budget - clock.Elapsed, warmupClock.Elapsed.TotalSeconds / warmupTimedSteps,
                    validationTokens?.Length ?? 0);
            bool evaluate = validationTokens is not null && _options.EvaluateEvery > 0 && Step % _options.EvaluateEvery == 0;
            bool diagnose = validationTokens is not null && _options.DiagnoseEvery > 0 && Step % _options.DiagnoseEvery == 0;
            if ((evaluate || diagnose) && _options.ReestimateQueryNormBatches > 0)
                ReestimateQueryNorm(sampler, _options.ReestimateQueryNormBatches);
            LanguageModelEvaluationResult? evaluation = evaluate ? Evaluate(validationTokens!, _options.EvaluationTokens) : null;
            UsageDiagnostics? diagnostics = diagnose ? Diagnose(validationTokens!, _options.EvaluationTokens, evaluation) : null;
            if (Step % _options.LogEvery == 0 || evaluation is not null || diagnostics is not null)
            {
                double tokensPerSecond = windowSteps * (double)_options.BatchSize * _options.SequenceLength / window.Elapsed.TotalSeconds;
                progress?.Invoke(new LanguageModelTrainingProgress(Step, _options.MaxSteps, windowLoss / windowSteps, lr, tokensPerSecond,
                    clock.Elapsed, evaluation, diagnostics));
                window.Restart();
                windowSteps = 0;
                windowLoss = 0;
            }
            if (_options.CheckpointPath is not null && Step % _options.CheckpointEvery == 0)
                SaveCheckpoint(_options.CheckpointPath);
        }
        if (_options.CheckpointPath is not null) SaveCheckpoint(_options.CheckpointPath);
        if (validationTokens is null) return null;
        if (_options.ReestimateQueryNormBatches > 0) ReestimateQueryNorm(sampler, _options.ReestimateQueryNormBatches);
        return Evaluate(validationTokens);
    }

    private void FitStepsToBudget(TimeSpan remaining, double secondsPerStep, int finalEvaluationTokens)
    {
        // Evaluation is forward only: about a quarter of a training step's time per token.
        double secondsPerEvaluationToken = secondsPerStep / ((double)_options.BatchSize * _options.SequenceLength) / 4;
        double evaluationSeconds = finalEvaluationTokens * secondsPerEvaluationToken;
        if (_options.EvaluateEvery > 0 && finalEvaluationTokens > 0)
        {
            int evaluations = (int)(remaining.TotalSeconds / secondsPerStep / _options.EvaluateEvery);
            int tokensEach = _options.EvaluationTokens > 0
                ? Math.Min(_options.EvaluationTokens, finalEvaluationTokens)
                : finalEvaluationTokens;
            evaluationSeconds += evaluations * tokensEach * secondsPerEvaluationToken;
        }
        int steps = (int)((remaining.TotalSeconds - evaluationSeconds) / secondsPerStep);
        _options.MaxSteps = Math.Max(Step + 1, Step + steps);
    }

    /// <summary>
    /// Mean cross-entropy and perplexity over consecutive, non-overlapping windows of <paramref name="tokens"/>
    /// in evaluation mode, and the expert usage of each product-key layer over the same pass.
    /// </summary>
    /// <param name="tokens">The evaluation token stream.</param>
    /// <param name="maxTokens">Score at most this many tokens from the start of the stream; 0 scores all.</param>
    public LanguageModelEvaluationResult Evaluate(int[] tokens, int maxTokens = 0) =>
        LanguageModelEvaluation.Evaluate(Model, tokens, _options.SequenceLength, _options.BatchSize, maxTokens);

    /// <summary>
    /// Usage diagnostics at the current step: <paramref name="tokens"/> evaluated with the query norms' running statistics
    /// and again with each batch's own (<see cref="UsageDiagnostics"/>).
    /// </summary>
    /// <param name="running">An evaluation already made at this step with the running statistics, to reuse; null makes one.</param>
    public UsageDiagnostics Diagnose(int[] tokens, int maxTokens = 0, LanguageModelEvaluationResult? running = null)
    {
        running ??= Evaluate(tokens, maxTokens);
        var batch = LanguageModelEvaluation.Evaluate(Model, tokens, _options.SequenceLength, _options.BatchSize, maxTokens,
            QueryNormStatistics.Batch);
        return new UsageDiagnostics(Step, (long)Step * _options.BatchSize * _options.SequenceLength, running, batch);
    }

    /// <summary>
    /// Re-estimates the query norms' running statistics from the batches of the last <paramref name="batches"/> steps taken
    /// (training batches the model has seen; the first ones before any step). Returns the routers re-estimated.
    /// </summary>
    public int ReestimateQueryNorm(TokenBatchSampler sampler, int batches)
    {
        ArgumentNullException.ThrowIfNull(sampler);
        if (batches <= 0) throw new ArgumentOutOfRangeException(nameof(batches), batches, $"{nameof(batches)} must be positive.");
        int first = Math.Max(0, Step - batches);
        return LanguageModelEvaluation.ReestimateQueryNorm(Model, batches, i => sampler.Batch(first + i).Inputs);
    }

    /// <summary>
    /// Writes model weights, optimizer state, options, step and loss history. The file is written beside
    /// the target and renamed into place, so an interrupted save never leaves a half-written checkpoint.
    /// </summary>
    public void SaveCheckpoint(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(directory);
        var temporary = Path.Combine(directory, $".{Path.GetFileName(path)}.{Environment.ProcessId}.tmp");
        try
        {
            using (var stream = File.Create(temporary))
            using (var writer = new BinaryWriter(stream, Encoding.UTF8))
            {
                writer.Write(CheckpointMagic);
                writer.Write(CheckpointVersion);
                writer.Write(JsonSerializer.Serialize(_modelOptions));
                writer.Write(JsonSerializer.Serialize(_options));
                writer.Write(Step);
                writer.Write(_history.Count);
                foreach (var point in _history) { writer.Write(point.Step); writer.Write(point.Loss); }
                Model.save(writer);
                Optimizer.Save(writer);
            }
            File.Move(temporary, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(temporary)) File.Delete(temporary);
        }
    }

    /// <summary>Restores a trainer from <see cref="SaveCheckpoint"/>; training continues where it stopped.</summary>
    /// <param name="path">The checkpoint file.</param>
    /// <param name="configure">Optionally changes training options that do not alter the run (time limit, logging, checkpoint
    /// path).</param>
    public static LanguageModelTrainingLoop LoadCheckpoint(string path, Action<LanguageModelTrainingOptions>? configure = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"No checkpoint at '{path}'.", path);
        using var stream = File.OpenRead(path);
        using var reader = new BinaryReader(stream, Encoding.UTF8);
        try
        {
            string magic = reader.ReadString();
            if (magic != CheckpointMagic) throw new InvalidDataException($"'{path}' is not a PEER language-model checkpoint.");
            int version = reader.ReadInt32();
            if (version != CheckpointVersion)
                throw new InvalidDataException(
                    $"'{path}' is a version {version} checkpoint; this build reads version {CheckpointVersion}.");
            var modelOptions = JsonSerializer.Deserialize<LanguageModelOptions>(reader.ReadString())!;
            var options = JsonSerializer.Deserialize<LanguageModelTrainingOptions>(reader.ReadString())!;
            configure?.Invoke(options);
            var trainer = new LanguageModelTrainingLoop(modelOptions, options);
            try
            {
                trainer.Step = reader.ReadInt32();
                int points = reader.ReadInt32();
                for (int i = 0; i < points; i++) trainer._history.Add(new LossPoint(reader.ReadInt32(), reader.ReadDouble()));
                trainer.Model.load(reader);
                trainer.Optimizer.Load(reader, path);
                return trainer;
            }
            catch
            {
                trainer.Dispose();
                throw;
            }
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException($"Checkpoint '{path}' is truncated.", e);
        }
    }
}
