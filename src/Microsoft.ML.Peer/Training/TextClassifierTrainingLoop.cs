using System.Diagnostics;
using Microsoft.ML.Peer.Models;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Peer.Training;

/// <summary>
/// Trains a <see cref="TransformerTextClassifier"/> on tokenized texts: AdamW (row-sparse for PEER/PKM tables),
/// warm-up + cosine schedule, global clipping, seeded length-grouped batches, an optional time budget, and a
/// validation pass after every epoch. The same seed and data give the same model.
/// </summary>
internal sealed class TextClassifierTrainingLoop : TrainingLoop<TransformerTextClassifier>
{
    // Batches are cut from pools of this many batches' worth of shuffled texts sorted by length: similar lengths
    // share a batch (less padding, the cost of attention and of the PEER experts follows real tokens) while the
    // order stays random across the epoch.
    private const int BatchesPerLengthPool = 32;

    private readonly TextClassifierOptions _modelOptions;
    private readonly ClassifierTrainingOptions _options;
    private int _totalSteps;

    /// <summary>Builds a fresh model from <paramref name="modelOptions"/>, initialised from the training seed.</summary>
    public TextClassifierTrainingLoop(TextClassifierOptions modelOptions, ClassifierTrainingOptions options)
    {
        ArgumentNullException.ThrowIfNull(modelOptions);
        ArgumentNullException.ThrowIfNull(options);
        modelOptions.Validate();
        options.Validate();
        _modelOptions = modelOptions.Clone();
        _options = options.Clone();
        Start(_options, () => new TransformerTextClassifier(_modelOptions),
            model => model.SparseGradientTableNames());
    }

    public ClassifierTrainingOptions Options => _options.Clone();

    /// <summary>
    /// Starts from a language model's weights: copies every parameter and buffer of <paramref name="languageModel"/> that the
    /// classifier has under the same name and shape (the embeddings, every block, the final norm); the head stays new. Call it
    /// before <see cref="Train"/>. Returns how many tensors were copied; throws when a shared part does not match.
    /// </summary>
    public int StartFrom(TransformerLanguageModel languageModel)
    {
        ArgumentNullException.ThrowIfNull(languageModel);
        var source = languageModel.state_dict();
        int copied = 0;
        using var noGrad = no_grad();
        foreach (var (name, tensor) in Model.state_dict())
        {
            if (!source.TryGetValue(name, out var from)) continue;
            if (!from.shape.SequenceEqual(tensor.shape) || from.dtype != tensor.dtype)
                throw new ArgumentException($"The language model's '{name}' is {from.dtype} [{string.Join(", ", from.shape)}] but the " +
                                            $"classifier's is {tensor.dtype} [{string.Join(", ", tensor.shape)}].", nameof(languageModel));
            tensor.copy_(from);
            copied++;
        }
        if (copied == 0) throw new ArgumentException("The language model shares no weights with the classifier.", nameof(languageModel));
        return copied;
    }

    /// <summary>
    /// Trains for <see cref="ClassifierTrainingOptions.Epochs"/> passes over <paramref name="tokens"/> (or what fits the
    /// <see cref="TrainingLoopOptions.TimeBudget"/>), evaluating on the validation texts after each pass when given.
    /// Texts longer than the context length are truncated to their first tokens; an empty text is one padding token.
    /// </summary>
    /// <param name="tokens">Token ids of each training text (never <see cref="TextClassifierOptions.PaddingId"/>).</param>
    /// <param name="labels">The class 0..C−1 of each text.</param>
    /// <param name="validationTokens">Optional validation texts.</param>
    /// <param name="validationLabels">Their classes; given exactly when <paramref name="validationTokens"/> is.</param>
    /// <param name="progress">Called every <see cref="TrainingLoopOptions.LogEvery"/> steps.</param>
    /// <param name="cancellation">Checked before every step; cancellation throws <see cref="OperationCanceledException"/>, leaving the
    /// model as the last finished step left it.</param>
    /// <param name="epochCompleted">Called after each epoch (and its validation pass), as the report is made.</param>
    public ClassifierTrainingResult Train(IReadOnlyList<int[]> tokens, IReadOnlyList<int> labels,
        IReadOnlyList<int[]>? validationTokens = null, IReadOnlyList<int>? validationLabels = null,
        Action<ClassifierProgress>? progress = null, CancellationToken cancellation = default,
        Action<ClassifierEpochReport>? epochCompleted = null)
    {
        CheckLabelled(tokens, labels, nameof(tokens), nameof(labels));
        if ((validationTokens is null) != (validationLabels is null))
            throw new ArgumentException($"{nameof(validationTokens)} and {nameof(validationLabels)} must be given together.",
                validationTokens is null ? nameof(validationTokens) : nameof(validationLabels));
        if (validationTokens is not null)
            CheckLabelled(validationTokens, validationLabels!, nameof(validationTokens), nameof(validationLabels));
        cancellation.ThrowIfCancellationRequested();

        var lengths = tokens.Select(Length).ToArray();
        int batchSize = _options.BatchSizeFor(tokens.Count);
        var plan = Enumerable.Range(0, _options.Epochs)
            .Select(e => PlanEpoch(lengths, batchSize, new Random(unchecked(_options.Seed * 7919 + e))))
            .ToList();
        int stepsPerEpoch = plan[0].Count;
        _totalSteps = _options.Epochs * stepsPerEpoch;
        long validationTokenCount = validationTokens?.Sum(t => (long)Length(t)) ?? 0;

        var reports = new List<ClassifierEpochReport>();
        var clock = Stopwatch.StartNew();
        var warmupClock = new Stopwatch();
        long warmupTimedTokens = 0;
        var window = Stopwatch.StartNew();
        int windowSteps = 0;
        double windowLoss = 0;
        long windowTokens = 0;
        int firstStep = Step;
        using var best = new BestEpoch(_options.EarlyStoppingPatience);
        using var average = _options.AverageWeights ? new WeightAverage(Model, averaged: name => !TransformerTextClassifier.LinearBagTableNames.Contains(name)) : null;
        double? lastTemperature = null;
        for (int epoch = 0; epoch < _options.Epochs && Step - firstStep < _totalSteps; epoch++)
        {
            var epochClock = Stopwatch.StartNew();
            double epochLoss = 0;
            int epochSteps = 0;
            long epochTokens = 0;
            foreach (var batch in plan[epoch])
            {
                if (Step - firstStep >= _totalSteps) break;
                cancellation.ThrowIfCancellationRequested();
                int relative = Step - firstStep;
                double lr = LearningRateSchedule.At(relative, _options.LearningRate, _options.WarmupSteps, _totalSteps,
                    _options.MinLearningRateFraction);
                bool timed = TimesWarmup(relative);
                if (timed) warmupClock.Start();
                double loss = TrainStep(tokens, labels, batch, lr, epoch + 1);
                average?.Update();
                if (timed) { warmupClock.Stop(); warmupTimedTokens += PaddedTokens(lengths, batch); }
                long real = batch.Sum(i => (long)lengths[i]);
                epochLoss += loss; epochSteps++; epochTokens += real;
                windowLoss += loss; windowSteps++; windowTokens += real;
                if (_options.TimeBudget is { } budget && Step - firstStep == _options.WarmupSteps && warmupTimedTokens > 0)
                    FitStepsToBudget(budget - clock.Elapsed, warmupClock.Elapsed.TotalSeconds / warmupTimedTokens, plan, lengths, epoch,
                        epochSteps, validationTokenCount);
                if ((Step - firstStep) % _options.LogEvery == 0)
                {
                    progress?.Invoke(new ClassifierProgress(Step, firstStep + _totalSteps, epoch + 1, windowLoss / windowSteps, lr,
                        windowTokens / window.Elapsed.TotalSeconds, clock.Elapsed));
                    window.Restart();
                    windowSteps = 0; windowLoss = 0; windowTokens = 0;
                }
            }
            double tokensPerSecond = epochTokens / epochClock.Elapsed.TotalSeconds;
            // Each epoch is judged (and kept) by the average of its weights; training goes on from the live ones.
            average?.Swap();
            var logits = validationTokens is null ? null : PredictLogits(validationTokens);
            var validation = logits is null ? null : ClassifierEvaluation.Of(logits, validationLabels!, Model.ScoreTemperature);
            reports.Add(new ClassifierEpochReport(epoch + 1, Step, firstStep + _totalSteps, epochLoss / Math.Max(1, epochSteps),
                validation?.Loss, validation?.Accuracy, tokensPerSecond, clock.Elapsed));
            epochCompleted?.Invoke(reports[^1]);
            bool stop = false;
            if (validation is not null)
            {
                // With calibration on, epochs are compared by their loss at their own best temperature: an overconfident epoch
                // that ranks the texts better is the better model once calibrated, and its raw loss would stop training too soon.
                lastTemperature = _options.FitScoreTemperature ? ScoreTemperatureFit.Fit(logits!, validationLabels!) : null;
                stop = best.ShouldStop(Model, epoch + 1, lastTemperature is { } t
                    ? ScoreTemperatureFit.CrossEntropy(logits!, validationLabels!, t)
                    : validation.Loss, lastTemperature);
            }
            if (stop) break;
            average?.Swap();
        }
        // The model holds the average of the last epoch trained; early stopping puts the best epoch's average back below.
        if (average is { ModelHoldsAverage: false }) average.Swap();
        // The kept epoch's temperature was fitted on its own logits when it was measured.
        var (keptEpoch, temperature) = best.RestoreBest(Model) ?? (reports.Count, lastTemperature);
        if (temperature is { } fitted) Model.ScoreTemperature = fitted;
        return new ClassifierTrainingResult(reports, Step - firstStep, clock.Elapsed, keptEpoch, temperature, batchSize);
    }

    /// <summary>
    /// Early stopping's record: the lowest validation loss so far, a copy of the weights that gave it (with the temperature fitted
    /// to them), and the epochs since. Disposing it frees the copy, also when training is cancelled.
    /// </summary>
    private sealed class BestEpoch(int patience) : IDisposable
    {
        private Dictionary<string, Tensor>? _weights;
        private double _loss = double.PositiveInfinity;
        private int _epoch;
        private double? _temperature;

        /// <summary>Records epoch <paramref name="epoch"/>'s validation loss; true when <c>patience</c> epochs passed without a lower
        /// one. Off (never true, nothing copied) when patience is 0.</summary>
        public bool ShouldStop(nn.Module model, int epoch, double loss, double? temperature)
        {
            if (patience == 0) return false;
            if (loss < _loss)
            {
                (_loss, _epoch, _temperature) = (loss, epoch, temperature);
                Dispose();
                using var noGrad = no_grad();
                _weights = model.state_dict().ToDictionary(p => p.Key, p => p.Value.detach().clone());
                return false;
            }
            return epoch - _epoch >= patience;
        }

        /// <summary>Puts the best epoch's weights back; returns that epoch and its temperature, or null when early stopping is
        /// off.</summary>
        public (int Epoch, double? Temperature)? RestoreBest(nn.Module model)
        {
            if (_weights is null) return null;
            using (var noGrad = no_grad())
                foreach (var (name, tensor) in model.state_dict()) tensor.copy_(_weights[name]);
            Dispose();
            return (_epoch, _temperature);
        }

        public void Dispose()
        {
            foreach (var tensor in _weights?.Values ?? Enumerable.Empty<Tensor>()) tensor.Dispose();
            _weights = null;
        }
    }

    private double TrainStep(IReadOnlyList<int[]> tokens, IReadOnlyList<int> labels, int[] batch, double lr, int epoch)
    {
        int step = Step;
        return OptimizerStep(() =>
        {
            var (loss, crossEntropy, _) = Model.Loss(Model.Batch(tokens, batch), tensor(batch.Select(i => (long)labels[i]).ToArray()));
            return (loss, crossEntropy);
        }, lr,
            loss =>
                $"Training diverged at step {step} (epoch {epoch}): the loss is {loss}. Lower LearningRate (now {_options.LearningRate}).");
    }

    private void FitStepsToBudget(TimeSpan remaining, double secondsPerToken, List<List<int[]>> plan, int[] lengths, int epoch,
        int stepsDoneInEpoch, long validationTokens)
    {
        // Walk the planned batches, charging each its padded tokens and each epoch end a forward pass over validation.
        double left = remaining.TotalSeconds;
        double validationSeconds = validationTokens * secondsPerToken / 3;
        int relative = _options.WarmupSteps;
        for (int e = epoch; e < plan.Count && left > 0; e++)
        {
            foreach (var batch in plan[e].Skip(e == epoch ? stepsDoneInEpoch : 0))
            {
                left -= PaddedTokens(lengths, batch) * secondsPerToken;
                if (left < 0) break;
                relative++;
            }
            left -= validationSeconds;
        }
        _totalSteps = Math.Clamp(relative, _options.WarmupSteps + 1, _totalSteps);
    }

    /// <summary>Mean cross-entropy and accuracy over labelled texts, in evaluation mode.</summary>
    public ClassifierEvaluation Evaluate(IReadOnlyList<int[]> tokens, IReadOnlyList<int> labels)
    {
        CheckLabelled(tokens, labels, nameof(tokens), nameof(labels));
        return ClassifierEvaluation.Of(PredictLogits(tokens), labels, Model.ScoreTemperature);
    }

    /// <summary>Class logits [text][class] in evaluation mode (running batch-norm statistics, no gradients).</summary>
    public float[][] PredictLogits(IReadOnlyList<int[]> tokens) => InEvaluationMode(tokens, Model.PredictLogits);

    /// <summary>
    /// Softmax class probabilities [text][class] in evaluation mode (running batch-norm statistics, no gradients),
    /// in batches of texts of similar length. A text's probabilities do not depend on the other texts.
    /// </summary>
    public float[][] PredictProbabilities(IReadOnlyList<int[]> tokens) => InEvaluationMode(tokens, Model.PredictProbabilities);

    private float[][] InEvaluationMode(IReadOnlyList<int[]> tokens, Func<IReadOnlyList<int[]>, int, float[][]> predict)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        bool wasTraining = Model.training;
        Model.eval();
        try
        {
            return predict(tokens, 2 * _options.BatchSize);
        }
        finally
        {
            Model.train(wasTraining);
        }
    }

    private int Length(int[] text) => TransformerTextClassifier.BatchLength(text, _modelOptions.ContextLength);

    private static long PaddedTokens(int[] lengths, int[] batch) => (long)batch.Length * batch.Max(i => lengths[i]);

    /// <summary>
    /// One epoch's batches: the texts shuffled, cut into pools of <see cref="BatchesPerLengthPool"/> batches, each pool
    /// sorted by length and cut into batches, and the batches shuffled. Depends only on the lengths and the random source.
    /// </summary>
    internal static List<int[]> PlanEpoch(int[] lengths, int batchSize, Random random)
    {
        var order = Enumerable.Range(0, lengths.Length).ToArray();
        random.Shuffle(order);
        var batches = new List<int[]>();
        int pool = batchSize * BatchesPerLengthPool;
        for (int start = 0; start < order.Length; start += pool)
        {
            var sorted = order[start..Math.Min(order.Length, start + pool)].OrderBy(i => lengths[i]).ToArray();
            for (int b = 0; b < sorted.Length; b += batchSize) batches.Add(sorted[b..Math.Min(sorted.Length, b + batchSize)]);
        }
        var shuffled = batches.ToArray();
        random.Shuffle(shuffled);
        return shuffled.ToList();
    }

    private void CheckLabelled(IReadOnlyList<int[]> tokens, IReadOnlyList<int> labels, string tokensName, string labelsName)
    {
        ArgumentNullException.ThrowIfNull(tokens, tokensName);
        ArgumentNullException.ThrowIfNull(labels, labelsName);
        if (tokens.Count != labels.Count)
            throw new ArgumentException($"{tokensName} holds {tokens.Count} texts but {labelsName} {labels.Count} labels.", labelsName);
        if (tokens.Count == 0) throw new ArgumentException($"{tokensName} holds no texts.", tokensName);
        for (int i = 0; i < labels.Count; i++)
        {
            if (tokens[i] is null) throw new ArgumentException($"{tokensName}[{i}] is null.", tokensName);
            if (labels[i] < 0 || labels[i] >= _modelOptions.ClassCount)
                throw new ArgumentOutOfRangeException(labelsName, labels[i],
                    $"{labelsName}[{i}] = {labels[i]} is outside 0..{_modelOptions.ClassCount - 1}.");
        }
    }
}
