using System.Diagnostics;
using Microsoft.ML.Data;
using Microsoft.ML.Peer.Data;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Training;
using Microsoft.ML.Runtime;
using static Microsoft.ML.Peer.Layers.OptionChecks;

namespace Microsoft.ML.Peer;

/// <summary>
/// Trains a text classifier: by default a weighted bag of each text's token embeddings through one product-key memory
/// (PKM) layer into a linear head, beside a linear model of its tokens and token pairs (<see cref="Options.LinearBag"/>); optionally a bidirectional transformer encoder whose sparse blocks' feed-forward is PEER,
/// PKM, MoE or dense. The label must be a key column
/// (MapValueToKey); two classes make a binary classifier. The transformer writes PredictedLabel and Score, so
/// <c>mlContext.MulticlassClassification.Evaluate</c> works unchanged. Create it with <c>mlContext.Peer().TextClassification(...)</c>.
/// </summary>
/// <remarks>
/// Texts longer than <see cref="Options.LinearBagLength"/> tokens (or <see cref="PeerTrainerOptionsBase.MaxSequenceLength"/>
/// without the linear bag) are truncated, in training and in scoring alike: by default to their first and last halves
/// (<see cref="Options.Truncation"/>); the model past the linear bag reads MaxSequenceLength of those tokens, picked the same way. Rows whose label is missing
/// are skipped. An empty or missing text is scored like any other.
/// </remarks>
public sealed class PeerTextClassificationTrainer : IEstimator<PeerTextClassificationTransformer>
{
    /// <summary>
    /// Options of <see cref="PeerTextClassificationTrainer"/>; shared fields are documented on <see cref="PeerTrainerOptionsBase"/>.
    /// The defaults are the configuration chosen by cross-validation on the training parts of the classifier suite
    /// (docs/ml-net-plugin.md), taken from where it is stated: the model's from <see cref="TextClassifierOptions.Recommended"/>
    /// (512 tokens of each text, its first and last half, and a linear bag of 2,048; no attention blocks, so a learned weighting of the token embeddings
    /// goes through one residual product-key memory layer before the linear head) and the training's from the classifier's training settings;
    /// three such models are trained and their probabilities averaged (<see cref="EnsembleSize"/>). Set <c>Layers</c> ≥ 1 for bidirectional
    /// attention blocks.
    /// </summary>
    public sealed class Options : PeerTrainerOptionsBase
    {
        public Options() : this(new ClassifierTrainingOptions(), TextClassifierOptions.Recommended(vocabularySize: 0, classCount: 0, paddingId: 0))
        {
        }

        // The model's defaults come from the recommended configuration (shape and size not read here: the base takes its own).
        private Options(ClassifierTrainingOptions training, TextClassifierOptions model) : base(model, training, training.Epochs)
        {
            LabelSmoothing = model.LabelSmoothing;
            TokenDropout = model.TokenDropout;
            BigramBuckets = model.BigramBuckets;
            Pooling = model.Pooling;
            LinearBag = model.LinearBag;
            LinearBagLength = model.LinearBagLength;
            EarlyStoppingPatience = training.EarlyStoppingPatience;
            MinimumStepsPerEpoch = training.MinimumStepsPerEpoch;
            CalibrateScores = training.FitScoreTemperature;
            AverageWeights = training.AverageWeights;
        }

        /// <summary>
        /// When no <see cref="PeerTrainerOptionsBase.ValidationSet"/> is given, the fraction of each class's labelled training rows
        /// (chosen by the seed) held out from training to stop early and to calibrate the scores. 0 trains on every row, with
        /// neither. Default 0.1.
        /// </summary>
        public double ValidationFraction = 0.1;

        /// <summary>
        /// Stop when the validation loss (on <see cref="PeerTrainerOptionsBase.ValidationSet"/> or the held-out
        /// <see cref="ValidationFraction"/>) has not fallen for this many epochs, and keep the weights of the epoch where it was
        /// lowest: <see cref="PeerTrainerOptionsBase.Epochs"/> is then the most epochs trained. 0 trains every epoch and keeps the
        /// last weights. Default 2.
        /// </summary>
        public int EarlyStoppingPatience;

        /// <summary>
        /// With fewer than <see cref="PeerTrainerOptionsBase.BatchSize"/> × this many training rows (after the held-out ones),
        /// batches shrink, to no fewer than 8 texts, so that an epoch still takes about this many optimizer steps; the refit
        /// keeps the held-out run's batches. 0 = always <see cref="PeerTrainerOptionsBase.BatchSize"/>. Default 64: on a few hundred
        /// texts, batches of 32 leave an epoch a dozen steps, most of them in warm-up (chosen by cross-validation on the suite's
        /// training parts).
        /// </summary>
        public int MinimumStepsPerEpoch;

        /// <summary>
        /// After training with rows held out by <see cref="ValidationFraction"/>, train again from the start on every row for the
        /// number of epochs early stopping kept, with the score temperature fitted on the held-out rows: no row is left
        /// unused, at about twice the time. Default true (chosen by cross-validation on the suite's training parts).
        /// </summary>
        public bool RefitOnAllRows = true;

        /// <summary>
        /// How many models are trained, one after the other, each as one model is (its own seed: the trainer's, then 1,000 more for
        /// each further model, so its own initialisation, batch order and held-out rows), and scored together by averaging their
        /// class probabilities. The fit, the scoring time and the saved model grow with it, about in proportion. 1 = one model.
        /// Default 3, chosen by cross-validation on the suite's training parts: one model's log-loss moved by up to 0.1 with the
        /// seed, and three models' mean was lower than one model's on all four sets (docs/ml-net-plugin.md, "Ninth round"). Set 1
        /// for a third of the fit and scoring time. Progress is reported for each model in turn;
        /// <see cref="PeerTrainerOptionsBase.TimeBudget"/> is each model's.
        /// </summary>
        public int EnsembleSize = 3;

        /// <summary>
        /// Fit the temperature of the scores on the validation rows after training, so the probabilities are as confident as
        /// the model is right (no prediction changes). Default true.
        /// </summary>
        public bool CalibrateScores;

        /// <summary>
        /// Score with a running average of the weights over the training steps, leaning towards the recent ones (polynomial-decay
        /// averaging), instead of the last step's weights: early stopping judges and keeps each epoch's average, and training
        /// goes on from the live weights. It costs about one more copy of the weights in memory. Default true: in cross-validation
        /// on the training parts of the classifier suite it lowered the log-loss on all four sets (docs/ml-net-plugin.md).
        /// </summary>
        public bool AverageWeights;

        /// <summary>
        /// Start from this trained PEER language model (from <c>mlContext.Peer().LanguageModel(...)</c>) instead of from random
        /// weights: the classifier takes its tokenizer, embeddings and blocks (so its shape and context length; the shape fields
        /// of these options are not used) and adds a new head, then trains all of it on the labelled rows. Default null.
        /// </summary>
        public PeerLanguageModelTransformer? LanguageModel;

        /// <summary>
        /// Pre-train a PEER language model with these options first, on every text of the training data (rows without a
        /// label too) and of <see cref="UnlabeledData"/>, and start from it as from <see cref="LanguageModel"/>. Their
        /// TextColumnName is not used (this trainer's is). Default null: no pre-training.
        /// </summary>
        public PeerLanguageModelTrainer.Options? Pretraining;

        /// <summary>More texts for <see cref="Pretraining"/> only (a column named <see cref="PeerTrainerOptionsBase.TextColumnName"/>;
        /// labels are not read). Default null.</summary>
        public IDataView? UnlabeledData;

        /// <summary>
        /// A text column naming the document (or source) each row comes from, as ML.NET's TrainTestSplit and CrossValidate take
        /// it: the rows held out by <see cref="ValidationFraction"/> are whole groups, so that passages of one document are not
        /// both trained on and validated on (which would stop training too late and leave the scores overconfident). Default
        /// null: rows are held out one by one.
        /// </summary>
        public string? SamplingKeyColumnName;

        /// <summary>Which tokens of a text longer than <see cref="LinearBagLength"/> (or <see cref="PeerTrainerOptionsBase.MaxSequenceLength"/>)
        /// are read. Default: the start and the end.</summary>
        public TextTruncation Truncation = TextTruncation.KeepStartAndEnd;

        /// <summary>
        /// Label smoothing of the training loss (0 = none). Default 0.1 (TextClassifierOptions.LabelSmoothing's); chosen by
        /// cross-validation on the suite's training parts.
        /// </summary>
        public double LabelSmoothing;

        /// <summary>
        /// Buckets of the hashed table of neighbouring-token pairs added to the bag of embeddings, so that it sees some word order
        /// (fastText's hashed n-grams); used only without attention blocks (<see cref="PeerTrainerOptionsBase.Layers"/> = 0).
        /// 0 = tokens alone. Default 0 (cross-validated on the suite's training parts, 2^18 buckets helped on some sets and hurt on
        /// others, at a 128 MiB table).
        /// </summary>
        public int BigramBuckets;

        /// <summary>
        /// Fraction of a text's tokens hidden from the model at random in each training step (never in scoring), so that it cannot
        /// lean on the few tokens that identify each training text. Default 0 (TextClassifierOptions.TokenDropout's).
        /// </summary>
        public double TokenDropout;

        /// <summary>
        /// How the token vectors of a text become one vector before the head. Default attention (a learned weighting of the tokens;
        /// <c>TextClassifierOptions.RecommendedPooling</c>), chosen by cross-validation on the suite's training parts.
        /// </summary>
        public TextPooling Pooling;

        /// <summary>
        /// Whether a linear classifier over each text's bag of tokens and hashed neighbouring-token pairs adds its logits to the
        /// model's (fastText's linear model beside ours), reading up to <see cref="LinearBagLength"/> tokens of each text. Default
        /// true (<c>TextClassifierOptions.RecommendedLinearBag</c>), chosen by cross-validation on the suite's training parts; it is
        /// left out where its tables would pass 2^24 weights (64 MiB: more than about 2,000 classes at the default vocabulary).
        /// </summary>
        public bool LinearBag;

        /// <summary>
        /// How many tokens of each text the linear bag reads (the start and the end, as <see cref="Truncation"/> says); texts are
        /// encoded to this length, and the rest of the model reads <see cref="PeerTrainerOptionsBase.MaxSequenceLength"/> of those
        /// tokens. Below MaxSequenceLength it reads MaxSequenceLength tokens. Default 2,048
        /// (<c>TextClassifierOptions.RecommendedLinearBagLength</c>), chosen by cross-validation on the suite's training parts.
        /// </summary>
        public int LinearBagLength;

        /// <summary>The label column: a key (use MapValueToKey). Default "Label".</summary>
        public string LabelColumnName = "Label";

        /// <summary>The class-probability column written (vector of float, one per class). Default "Score".</summary>
        public string ScoreColumnName = "Score";

        /// <summary>The predicted class written (a key of the label's type). Default "PredictedLabel".</summary>
        public string PredictedLabelColumnName = "PredictedLabel";

        internal override void Validate()
        {
            base.Validate();
            foreach (var (value, name) in new[] { (LabelColumnName, nameof(LabelColumnName)), (ScoreColumnName, nameof(ScoreColumnName)),
                (PredictedLabelColumnName, nameof(PredictedLabelColumnName)) })
                if (string.IsNullOrWhiteSpace(value)) throw new ArgumentException($"{name} must name a column.", name);
            if (LanguageModel is not null && Pretraining is not null)
                throw new ArgumentException($"Set {nameof(LanguageModel)} (start from a trained language model) or {nameof(Pretraining)} " +
                                            "(pre-train one first), not both.", nameof(Pretraining));
            Pretraining?.Validate();
            if (UnlabeledData is not null && Pretraining is null)
                throw new ArgumentException($"{nameof(UnlabeledData)} is only read to pre-train a language model: set {nameof(Pretraining)} too.",
                    nameof(UnlabeledData));
            if (EnsembleSize < 1 || EnsembleSize > ModelLimits.EnsembleSize)
                throw new ArgumentOutOfRangeException(nameof(EnsembleSize), EnsembleSize,
                    $"{nameof(EnsembleSize)} must be in 1..{ModelLimits.EnsembleSize}; got {EnsembleSize}.");
            if (ValidationFraction is < 0 or >= 1 || double.IsNaN(ValidationFraction))
                throw new ArgumentOutOfRangeException(nameof(ValidationFraction), ValidationFraction,
                    $"{nameof(ValidationFraction)} must be in [0, 1); got {ValidationFraction}.");
            // The training loop's own checks (early stopping patience, the step rule, ...), now rather than after reading the data.
            TrainingOptions(seed: 1).Validate();
            Positive(LinearBagLength, nameof(LinearBagLength));
            if (!Enum.IsDefined(Truncation))
                throw new ArgumentOutOfRangeException(nameof(Truncation), Truncation, $"Unknown {nameof(Truncation)} {Truncation}.");
            // The model's own checks (experts a perfect square, top-k ≤ sqrt(N), heads dividing d, ...), now rather than after reading
            // the data.
            ModelOptions(VocabularySize, classCount: 2, paddingId: 0);
            if (ScoreColumnName == PredictedLabelColumnName)
                throw new ArgumentException(
                    $"{nameof(ScoreColumnName)} and {nameof(PredictedLabelColumnName)} are both '{ScoreColumnName}'.",
                    nameof(PredictedLabelColumnName));
        }

        /// <summary>The training loop's settings from these options, with <paramref name="seed"/>.</summary>
        internal ClassifierTrainingOptions TrainingOptions(int seed) => new()
        {
            Seed = seed,
            BatchSize = BatchSize,
            LearningRate = LearningRate,
            WarmupSteps = WarmupSteps,
            Epochs = Epochs,
            TimeBudget = TimeBudget,
            WeightDecay = WeightDecay,
            EarlyStoppingPatience = EarlyStoppingPatience,
            MinimumStepsPerEpoch = MinimumStepsPerEpoch,
            FitScoreTemperature = CalibrateScores,
            AverageWeights = AverageWeights,
        };

        /// <summary>The model's settings: <paramref name="languageModel"/>'s shape when starting from one, else these options'.</summary>
        internal TextClassifierOptions ModelOptions(LanguageModelOptions? languageModel, int vocabularySize, int classCount, int paddingId)
        {
            if (languageModel is null) return ModelOptions(vocabularySize, classCount, paddingId);
            return WithClassifierSettings(TextClassifierOptions.LikeLanguageModel(languageModel, classCount, paddingId));
        }

        internal TextClassifierOptions ModelOptions(int vocabularySize, int classCount, int paddingId) =>
            WithClassifierSettings(ApplyTo(new TextClassifierOptions { VocabularySize = vocabularySize, ClassCount = classCount, PaddingId = paddingId }));

        // The classifier's own settings, the same whatever the shape came from; token pairs only where the shape has no blocks.
        private TextClassifierOptions WithClassifierSettings(TextClassifierOptions options)
        {
            options.LabelSmoothing = LabelSmoothing;
            options.TokenDropout = TokenDropout;
            options.Pooling = Pooling;
            options.BigramBuckets = options.Layers == 0 ? BigramBuckets : 0;
            options.UseLinearBag(LinearBag, LinearBagLength);
            options.Truncation = Truncation;
            options.Validate();
            return options;
        }
    }

    private readonly IHost _host;
    private readonly Options _options;

    internal PeerTextClassificationTrainer(IHostEnvironment env, Options options)
        => (_host, _options) = PeerTrainerOptionsBase.Register(env, options, nameof(PeerTextClassificationTrainer));

    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        SchemaChecks.TextColumn(inputSchema, _options.TextColumnName);
        SchemaChecks.KeyLabelColumn(inputSchema, _options.LabelColumnName);
        if (_options.SamplingKeyColumnName is { } key)
            SchemaChecks.TextColumn(inputSchema, key, $"sampling key ({nameof(Options.SamplingKeyColumnName)})");
        inputSchema.TryFindColumn(_options.LabelColumnName, out var label);
        var columns = inputSchema.ToDictionary(c => c.Name);
        columns[_options.ScoreColumnName] = new SchemaShape.Column(_options.ScoreColumnName, SchemaShape.Column.VectorKind.Vector,
            NumberDataViewType.Single, false);
        columns[_options.PredictedLabelColumnName] = new SchemaShape.Column(_options.PredictedLabelColumnName,
            SchemaShape.Column.VectorKind.Scalar, label.ItemType, true, label.Annotations);
        return new SchemaShape(columns.Values);
    }

    /// <summary>Trains on <paramref name="input"/>, scoring <see cref="PeerTrainerOptionsBase.ValidationSet"/> after each epoch if
    /// given.</summary>
    public PeerTextClassificationTransformer Fit(IDataView input) => Fit(input, _options.ValidationSet);

    /// <summary>Trains on <paramref name="input"/> and reports accuracy on <paramref name="validationSet"/> (may be null) after each
    /// epoch.</summary>
    public PeerTextClassificationTransformer Fit(IDataView input, IDataView? validationSet)
    {
        ArgumentNullException.ThrowIfNull(input);
        var textColumn = SchemaChecks.TextColumn(input.Schema, _options.TextColumnName);
        var labelType = SchemaChecks.KeyLabelColumn(input.Schema, _options.LabelColumnName, out var labelColumn);
        if (labelType.Count < 2 || labelType.Count > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(input),
                $"Label column '{_options.LabelColumnName}' has {labelType.Count} key values; a classifier needs at least 2.");
        int classCount = (int)labelType.Count;
        var keyValues = LabelKeyValues.FromColumn(labelColumn, classCount);
        (DataViewSchema.Column Text, DataViewSchema.Column Label)? validationColumns = null;
        if (validationSet is not null)
        {
            var validationText = SchemaChecks.TextColumn(validationSet.Schema, _options.TextColumnName, "validation text");
            var validationKey = SchemaChecks.KeyLabelColumn(validationSet.Schema, _options.LabelColumnName, out var validationLabel);
            if (validationKey.Count != labelType.Count)
                throw new ArgumentOutOfRangeException(nameof(validationSet), $"The validation label column '{_options.LabelColumnName}' has {validationKey.Count} keys; the training one has {labelType.Count}. Map both with the same MapValueToKey.");
            validationColumns = (validationText, validationLabel);
        }

        using var ch = _host.Start("Training PEER text classifier");
        var clock = Stopwatch.StartNew();
        var groupColumn = _options.SamplingKeyColumnName is { } key
            ? SchemaChecks.TextColumn(input.Schema, key, $"sampling key ({nameof(Options.SamplingKeyColumnName)})")
            : (DataViewSchema.Column?)null;
        var everyText = _options.Pretraining is null ? null : new List<string>();
        var (texts, labels, skipped, groups) = DataViewReading.LabeledTexts(input, textColumn, labelColumn, _host, groupColumn, everyText);
        if (skipped > 0)
            ch.Warning($"Skipped {skipped:N0} training rows whose label '{_options.LabelColumnName}' is missing" +
                       (_options.Pretraining is null ? "." : " (pre-training reads their texts)."));
        if (texts.Count == 0)
            throw new ArgumentException(
                $"The training data has no rows with a label in '{_options.LabelColumnName}': a classifier needs labelled texts.",
                nameof(input));
        var present = labels.Distinct().OrderBy(l => l).ToArray();
        if (present.Length < 2)
            throw new ArgumentException($"The training data holds one class only ({ClassName(keyValues, present[0])}, {texts.Count:N0} rows): a classifier needs at least two.", nameof(input));

        PeerLanguageModelTransformer? pretrained = everyText is null ? null : Pretrain(everyText, ch);
        try
        {
            return Fit(texts, labels, groups, classCount, keyValues, validationColumns, validationSet, pretrained ?? _options.LanguageModel,
                ch, clock);
        }
        finally
        {
            pretrained?.Dispose();
        }
    }

    /// <summary>Trains a language model with <see cref="Options.Pretraining"/> on <paramref name="corpus"/> (every text of the training
    /// data, labelled or not) and the texts of <see cref="Options.UnlabeledData"/>.</summary>
    private PeerLanguageModelTransformer Pretrain(List<string> corpus, IChannel ch)
    {
        if (_options.UnlabeledData is { } unlabeled)
            corpus.AddRange(DataViewReading.Texts(unlabeled,
                SchemaChecks.TextColumn(unlabeled.Schema, _options.TextColumnName, "unlabeled text"), _host));
        ch.Info($"Pre-training a language model on {corpus.Count:N0} texts.");
        var options = _options.Pretraining!;
        var token = options.CancellationToken;
        options.CancellationToken = _options.CancellationToken.CanBeCanceled ? _options.CancellationToken : token;
        try
        {
            return new PeerLanguageModelTrainer(_host, options).Fit(corpus, null, nameof(Options.UnlabeledData));
        }
        finally
        {
            options.CancellationToken = token;
        }
    }

    private PeerTextClassificationTransformer Fit(List<string> texts, List<int> labels, List<string>? groups, int classCount, LabelKeyValues? keyValues,
        (DataViewSchema.Column Text, DataViewSchema.Column Label)? validationColumns, IDataView? validationSet,
        PeerLanguageModelTransformer? languageModel, IChannel ch, Stopwatch clock)
    {
        var tokenizer = languageModel?.Tokenizer ?? CompactTokenizer.Build(texts, _options.VocabularySize);
        var modelOptions = _options.ModelOptions(languageModel?.ModelOptions, tokenizer.VocabularySize, classCount, tokenizer.EndOfTextId);
        int inputLength = modelOptions.InputLength;
        var tokens = texts.Select(t => tokenizer.EncodeTruncated(t, inputLength, _options.Truncation)).ToList();
        List<int[]>? validationTokens = null;
        List<int>? validationLabels = null;
        if (validationColumns is { } vc)
        {
            var (vTexts, vLabels, _, _) = DataViewReading.LabeledTexts(validationSet!, vc.Text, vc.Label, _host);
            if (vTexts.Count > 0)
            {
                validationTokens = vTexts.Select(t => tokenizer.EncodeTruncated(t, inputLength, _options.Truncation)).ToList();
                validationLabels = vLabels;
            }
        }

        int seed = _options.Seed ?? (_host as IHostEnvironmentInternal)?.Seed ?? 1;
        ch.Info($"{texts.Count:N0} training texts in {classCount} classes, {tokens.Sum(t => (long)t.Length):N0} tokens (at most {inputLength} of each" +
                (modelOptions.LinearBag ? $", {modelOptions.ContextLength} for the encoder; a linear bag with {modelOptions.LinearBagBuckets:N0} pair buckets" : "") +
                $"), vocabulary {tokenizer.VocabularySize:N0}; {modelOptions.FeedForward} feed-forward, d = {modelOptions.ModelDimension}, {modelOptions.Layers} block(s)" +
                (_options.EnsembleSize > 1 ? $"; an ensemble of {_options.EnsembleSize} models." : "."));
        var members = new List<TransformerTextClassifier>();
        try
        {
            for (int m = 0; m < _options.EnsembleSize; m++)
            {
                int memberSeed = unchecked(seed + MemberSeedStep * m);
                if (_options.EnsembleSize > 1) ch.Info($"Model {m + 1} of {_options.EnsembleSize} (seed {memberSeed}).");
                members.Add(TrainModel(memberSeed, modelOptions, tokens, labels, groups, validationTokens, validationLabels, languageModel, ch, clock));
            }
            return new PeerTextClassificationTransformer(_host, members, tokenizer, keyValues, _options.Truncation, _options.TextColumnName,
                _options.ScoreColumnName, _options.PredictedLabelColumnName);
        }
        catch
        {
            foreach (var member in members) member.Dispose();
            throw;
        }
    }

    /// <summary>What each further model of an ensemble adds to the seed.</summary>
    internal const int MemberSeedStep = 1000;

    /// <summary>
    /// One model, trained with <paramref name="seed"/>: on <paramref name="tokens"/> less the rows it holds out (unless a validation
    /// set is given), stopped early and calibrated on those, then refitted on every row.
    /// </summary>
    private TransformerTextClassifier TrainModel(int seed, TextClassifierOptions modelOptions, List<int[]> tokens, List<int> labels,
        List<string>? groups, List<int[]>? validationTokens, List<int>? validationLabels, PeerLanguageModelTransformer? languageModel,
        IChannel ch, Stopwatch clock)
    {
        var (allTokens, allLabels) = (tokens, labels);
        bool heldOutHere = false;
        if (validationTokens is null && _options.ValidationFraction > 0)
        {
            var heldOut = HoldOut(labels, groups, _options.ValidationFraction, seed);
            if (heldOut.Count > 0)
            {
                var held = heldOut.ToHashSet();
                validationTokens = heldOut.Select(i => tokens[i]).ToList();
                validationLabels = heldOut.Select(i => labels[i]).ToList();
                var kept = Enumerable.Range(0, tokens.Count).Where(i => !held.Contains(i)).ToList();
                tokens = kept.Select(i => tokens[i]).ToList();
                labels = kept.Select(i => labels[i]).ToList();
                heldOutHere = true;
                ch.Info($"Held out {heldOut.Count:N0} of the training rows ({nameof(Options.ValidationFraction)} {_options.ValidationFraction}) " +
                        "to stop early and calibrate the scores.");
            }
        }

        var training = _options.TrainingOptions(seed);
        var trainer = new TextClassifierTrainingLoop(modelOptions, training);
        try
        {
            if (languageModel is not null)
                ch.Info($"Starting from the language model's weights ({trainer.StartFrom(languageModel.Model)} tensors).");
            using var cancellation = new HostCancellation(_host, _options.CancellationToken);
            var result = trainer.Train(tokens, labels, validationTokens, validationLabels, p => Report(ch, p, clock.Elapsed),
                cancellation.Token, epoch => ReportEpoch(ch, epoch));
            cancellation.ThrowIfCancelled();
            ch.Info($"Trained {result.Steps} steps of {result.BatchSize} texts in {clock.Elapsed:hh\\:mm\\:ss}; kept epoch {result.KeptEpoch}'s weights" +
                    (result.ScoreTemperature is { } t ? $", score temperature {t:F3}." : "."));
            if (_options.RefitOnAllRows && heldOutHere)
            {
                // Again from the start on every row, for the epochs the held-out rows chose, keeping their temperature.
                var refit = new TextClassifierTrainingLoop(modelOptions, training.CloneWith(result.KeptEpoch, result.BatchSize));
                trainer.Dispose();
                trainer = refit;
                if (languageModel is not null) trainer.StartFrom(languageModel.Model);
                var again = trainer.Train(allTokens, allLabels, null, null, p => Report(ch, p, clock.Elapsed), cancellation.Token,
                    epoch => ReportEpoch(ch, epoch));
                cancellation.ThrowIfCancelled();
                if (result.ScoreTemperature is { } temperature)
                {
                    // Fitted to the held-out run's model; the refit is another model. Where a sharpening temperature scores the
                    // refit worse than none on the held-out rows (which it trained on), it does not transfer: the scores stay as trained.
                    if (ScoreTemperatureFit.Transfers(trainer.PredictLogits(validationTokens!), validationLabels!, temperature))
                        trainer.Model.ScoreTemperature = temperature;
                    else
                        ch.Warning($"The score temperature {temperature:F3} fitted on the held-out rows makes the refitted model's scores " +
                                   "worse on them, so it is not used: the model may not have learned the task.");
                }
                ch.Info($"Refitted on all {allTokens.Count:N0} rows: {again.Steps} steps, {clock.Elapsed:hh\\:mm\\:ss} in all.");
            }
            return trainer.ReleaseModel();
        }
        finally
        {
            trainer.Dispose();
        }
    }

    /// <summary>
    /// The rows held out for validation: about <paramref name="fraction"/> of each class's rows, never more (rounded down), chosen
    /// by <paramref name="seed"/>. With <paramref name="groups"/>, whole groups are held out or kept, so that passages of one
    /// document are never on both sides: groups in a seeded order each go to validation when every class they hold still has
    /// room. A class too small to give a row keeps all of them for training.
    /// </summary>
    internal static List<int> HoldOut(IReadOnlyList<int> labels, IReadOnlyList<string>? groups, double fraction, int seed)
    {
        var random = new Random(unchecked(seed * 31 + 17));
        var room = labels.GroupBy(l => l).ToDictionary(g => g.Key, g => (int)(g.Count() * fraction));
        var units = groups is null
            ? Enumerable.Range(0, labels.Count).Select(i => new[] { i }).ToArray()
            : Enumerable.Range(0, labels.Count).GroupBy(i => groups[i]).Select(g => g.ToArray()).ToArray();
        random.Shuffle(units);
        var heldOut = new List<int>();
        foreach (var rows in units)
        {
            var need = rows.GroupBy(i => labels[i]).ToDictionary(g => g.Key, g => g.Count());
            if (need.Any(n => n.Value > room[n.Key])) continue;
            foreach (var (label, count) in need) room[label] -= count;
            heldOut.AddRange(rows);
        }
        heldOut.Sort();
        return heldOut;
    }

    private void ReportEpoch(IChannel ch, ClassifierEpochReport epoch)
    {
        int totalSteps = Math.Max(epoch.PlannedSteps, epoch.Steps);
        string validation = epoch.ValidationAccuracy is { } accuracy
            ? $", validation loss {epoch.ValidationLoss:F4}, accuracy {accuracy:P2}"
            : "";
        ch.Info($"epoch {epoch.Epoch}: train loss {epoch.TrainLoss:F4}{validation}, {epoch.TokensPerSecond:N0} tokens/s, elapsed {epoch.Elapsed:hh\\:mm\\:ss}");
        _options.Progress?.Report(new PeerTrainingProgress(epoch.Epoch, epoch.Steps, totalSteps, epoch.TrainLoss, epoch.TokensPerSecond,
            epoch.Elapsed, Remaining(epoch.Elapsed, epoch.Steps, totalSteps), epoch.ValidationAccuracy));
    }

    /// <summary>Time left for the whole fit (every epoch), at the pace so far.</summary>
    internal static TimeSpan Remaining(TimeSpan elapsed, int step, int totalSteps) =>
        step > 0 ? TimeSpan.FromTicks(elapsed.Ticks / step * Math.Max(0, totalSteps - step)) : TimeSpan.Zero;

    private static string ClassName(LabelKeyValues? keyValues, int label)
        => keyValues is null ? $"key {label + 1}" : $"'{keyValues.Values[label]}'";

    private void Report(IChannel ch, ClassifierProgress p, TimeSpan elapsed)
    {
        var remaining = Remaining(elapsed, p.Step, p.TotalSteps);
        ch.Info($"epoch {p.Epoch}, step {p.Step}/{p.TotalSteps}, loss {p.Loss:F4}, {p.TokensPerSecond:N0} tokens/s, ETA {remaining:hh\\:mm\\:ss}");
        _options.Progress?.Report(new PeerTrainingProgress(p.Epoch, p.Step, p.TotalSteps, p.Loss, p.TokensPerSecond, elapsed, remaining,
            null));
    }
}
