using Microsoft.ML.Runtime;
using System.Diagnostics;
using Microsoft.ML.Data;
using Microsoft.ML.Peer.Data;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Training;
using static TorchSharp.torch;
using static Microsoft.ML.Peer.Layers.OptionChecks;

namespace Microsoft.ML.Peer;

/// <summary>
/// Trains a decoder-only transformer language model, whose sparse block's feed-forward is PEER (or dense, MoE, PKM),
/// on the documents of a text column. The result, a <see cref="PeerLanguageModelTransformer"/>, adds per-row
/// perplexity and generates text. Create it with <c>mlContext.Peer().LanguageModel(...)</c>.
/// </summary>
public sealed class PeerLanguageModelTrainer : IEstimator<PeerLanguageModelTransformer>
{
    /// <summary>Options of <see cref="PeerLanguageModelTrainer"/>; the shared fields are documented on
    /// <see cref="PeerTrainerOptionsBase"/>.</summary>
    public sealed class Options : PeerTrainerOptionsBase
    {
        /// <summary>The defaults are the recommended language model (<c>LanguageModelOptions</c>) and its training settings; one
        /// epoch.</summary>
        public Options() : base(new LanguageModelOptions(), new LanguageModelTrainingOptions(), epochs: 1)
        {
        }

        /// <summary>Name of the perplexity column the transformer adds (float). Default "Perplexity".</summary>
        public string PerplexityColumnName = "Perplexity";

        /// <summary>Name of the token-count column the transformer adds (int). Default "TokenCount".</summary>
        public string TokenCountColumnName = "TokenCount";

        /// <summary>Report progress every this many steps. Default 10.</summary>
        public int LogEvery = 10;

        /// <summary>Score the validation set every this many steps as well as at the end; 0 (default) scores it at the end only.</summary>
        public int EvaluateEvery;

        /// <summary>At most this many validation tokens in each periodic evaluation (0: all); the final one scores all. Default
        /// 16,384.</summary>
        public int EvaluationTokens = 16_384;

        /// <summary>
        /// Before each validation score (and before the model is handed over), replace every PEER/PKM query batch norm's running
        /// mean and variance with the exact ones of the raw queries of this many of the latest training batches. BN's running
        /// statistics are an exponential average that trails the queries while they still change, which makes early
        /// evaluations understate expert usage. 0 (default) keeps BN's own running statistics, as the paper's layer does.
        /// </summary>
        public int ReestimateQueryNormBatches;

        internal override void Validate()
        {
            base.Validate();
            Positive(LogEvery, nameof(LogEvery));
            if (EvaluateEvery < 0)
                throw new ArgumentOutOfRangeException(nameof(EvaluateEvery), EvaluateEvery,
                    $"{nameof(EvaluateEvery)} must not be negative.");
            if (ReestimateQueryNormBatches < 0)
                throw new ArgumentOutOfRangeException(nameof(ReestimateQueryNormBatches), ReestimateQueryNormBatches,
                    $"{nameof(ReestimateQueryNormBatches)} must not be negative.");
            if (EvaluationTokens < 0)
                throw new ArgumentOutOfRangeException(nameof(EvaluationTokens), EvaluationTokens,
                    $"{nameof(EvaluationTokens)} must not be negative.");
            // The model's own checks (experts a perfect square, top-k ≤ sqrt(N), heads dividing d, ...), now rather than after reading
            // the data.
            ModelOptions(VocabularySize).Validate();
            if (string.IsNullOrWhiteSpace(PerplexityColumnName))
                throw new ArgumentException($"{nameof(PerplexityColumnName)} must name a column.", nameof(PerplexityColumnName));
            if (string.IsNullOrWhiteSpace(TokenCountColumnName))
                throw new ArgumentException($"{nameof(TokenCountColumnName)} must name a column.", nameof(TokenCountColumnName));
        }

        internal LanguageModelOptions ModelOptions(int vocabularySize)
            => ApplyTo(new LanguageModelOptions { VocabularySize = vocabularySize });
    }

    private readonly IHost _host;
    private readonly Options _options;

    internal PeerLanguageModelTrainer(IHostEnvironment env, Options options)
        => (_host, _options) = PeerTrainerOptionsBase.Register(env, options, nameof(PeerLanguageModelTrainer));

    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        SchemaChecks.TextColumn(inputSchema, _options.TextColumnName);
        var columns = inputSchema.ToDictionary(c => c.Name);
        columns[_options.PerplexityColumnName] = new SchemaShape.Column(_options.PerplexityColumnName, SchemaShape.Column.VectorKind.Scalar,
            NumberDataViewType.Single, false);
        columns[_options.TokenCountColumnName] = new SchemaShape.Column(_options.TokenCountColumnName, SchemaShape.Column.VectorKind.Scalar,
            NumberDataViewType.Int32, false);
        return new SchemaShape(columns.Values);
    }

    /// <summary>Trains on the documents of <paramref name="input"/>, scoring <see cref="PeerTrainerOptionsBase.ValidationSet"/> at the end
    /// if given.</summary>
    public PeerLanguageModelTransformer Fit(IDataView input) => Fit(input, _options.ValidationSet);

    /// <summary>Trains on <paramref name="input"/> and reports the perplexity of <paramref name="validationSet"/> (may be null).</summary>
    public PeerLanguageModelTransformer Fit(IDataView input, IDataView? validationSet)
    {
        ArgumentNullException.ThrowIfNull(input);
        var textColumn = SchemaChecks.TextColumn(input.Schema, _options.TextColumnName);
        var validationColumn = validationSet is null
            ? (DataViewSchema.Column?)null
            : SchemaChecks.TextColumn(validationSet.Schema, _options.TextColumnName, "validation text");
        var texts = DataViewReading.Texts(input, textColumn, _host);
        var validationTexts = validationSet is null ? null : DataViewReading.Texts(validationSet, validationColumn!.Value, _host);
        return Fit(texts, validationTexts, nameof(input));
    }

    /// <summary>Trains on documents already read (the classifier's pre-training calls it with its own texts).</summary>
    internal PeerLanguageModelTransformer Fit(IReadOnlyList<string> texts, IReadOnlyList<string>? validationTexts, string inputName)
    {
        using var ch = _host.Start("Training PEER language model");
        var clock = Stopwatch.StartNew();
        if (texts.Count == 0)
            throw new ArgumentException("The training data has no rows: a language model needs at least one document.", inputName);
        var tokenizer = CompactTokenizer.Build(texts, _options.VocabularySize);
        int[] trainTokens = Concatenate(texts, tokenizer);
        if (trainTokens.Length < _options.MaxSequenceLength + 1)
            throw new ArgumentException($"The training texts hold {trainTokens.Length} tokens; a language model with MaxSequenceLength {_options.MaxSequenceLength} needs at least {_options.MaxSequenceLength + 1}.", inputName);
        int[]? validationTokens = validationTexts is null ? null : Concatenate(validationTexts, tokenizer);
        if (validationTokens is { Length: < 2 }) validationTokens = null;

        var seed = _options.Seed ?? (_host as IHostEnvironmentInternal)?.Seed ?? 1;
        long tokensPerStep = (long)_options.BatchSize * _options.MaxSequenceLength;
        int stepsPerEpoch = (int)Math.Max(1, trainTokens.Length / tokensPerStep);
        var training = new LanguageModelTrainingOptions
        {
            Seed = seed,
            BatchSize = _options.BatchSize,
            SequenceLength = _options.MaxSequenceLength,
            LearningRate = _options.LearningRate,
            WeightDecay = _options.WeightDecay,
            WarmupSteps = _options.WarmupSteps,
            MaxSteps = Math.Max(_options.WarmupSteps + 1, stepsPerEpoch * _options.Epochs),
            TimeBudget = _options.TimeBudget,
            // The schedule is fitted to the budget after warm-up; the limit also stops a run whose steps slow down later.
            TimeLimit = _options.TimeBudget,
            LogEvery = _options.LogEvery,
            EvaluateEvery = _options.EvaluateEvery,
            EvaluationTokens = _options.EvaluationTokens,
            ReestimateQueryNormBatches = _options.ReestimateQueryNormBatches,
        };
        var modelOptions = _options.ModelOptions(tokenizer.VocabularySize);
        ch.Info($"{trainTokens.Length:N0} training tokens from {texts.Count:N0} documents, vocabulary {tokenizer.VocabularySize:N0}; " +
                $"{modelOptions.FeedForward} feed-forward, d = {modelOptions.ModelDimension}, {modelOptions.Layers} blocks.");

        var trainer = new LanguageModelTrainingLoop(modelOptions, training);
        try
        {
            using var cancellation = new HostCancellation(_host, _options.CancellationToken);
            var result = trainer.Train(trainTokens, validationTokens, p => Report(ch, p, stepsPerEpoch, clock.Elapsed), cancellation.Token);
            cancellation.ThrowIfCancelled();
            if (result is null && _options.ReestimateQueryNormBatches > 0)
                trainer.ReestimateQueryNorm(new TokenBatchSampler(trainTokens, training.BatchSize, training.SequenceLength, seed),
                    _options.ReestimateQueryNormBatches);
            if (result is not null)
                ch.Info($"Validation perplexity {result.Perplexity:F2} over {result.Tokens:N0} tokens.");
            ch.Info($"Trained {trainer.Step} steps in {clock.Elapsed:hh\\:mm\\:ss}.");
            var model = trainer.ReleaseModel();
            return new PeerLanguageModelTransformer(_host, model, tokenizer, modelOptions, _options.TextColumnName,
                _options.PerplexityColumnName, _options.TokenCountColumnName);
        }
        finally
        {
            trainer.Dispose();
        }
    }

    private void Report(IChannel ch, LanguageModelTrainingProgress p, int stepsPerEpoch, TimeSpan elapsed)
    {
        var remaining = p.Step > 0 ? TimeSpan.FromTicks(elapsed.Ticks / p.Step * Math.Max(0, p.MaxSteps - p.Step)) : TimeSpan.Zero;
        int epoch = 1 + (p.Step - 1) / stepsPerEpoch;
        ch.Info(
            $"epoch {epoch}, step {p.Step}/{p.MaxSteps}, loss {p.Loss:F4}, {p.TokensPerSecond:N0} tokens/s, ETA {remaining:hh\\:mm\\:ss}" +
            (p.Evaluation is { } e ? $", validation perplexity {e.Perplexity:F2}" : ""));
        _options.Progress?.Report(new PeerTrainingProgress(epoch, p.Step, p.MaxSteps, p.Loss, p.TokensPerSecond, elapsed, remaining,
            p.Evaluation?.Perplexity));
    }

    // Documents joined into one stream, each followed by the end-of-text id, as the model is trained and scored.
    private static int[] Concatenate(IEnumerable<string> texts, CompactTokenizer tokenizer)
    {
        var stream = new List<int>();
        foreach (var text in texts)
        {
            if (text.Length == 0) continue;
            stream.AddRange(tokenizer.Encode(text));
            stream.Add(tokenizer.EndOfTextId);
        }
        return stream.ToArray();
    }
}
