using Microsoft.ML.Runtime;
using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Training;
using static Microsoft.ML.Peer.Layers.OptionChecks;

namespace Microsoft.ML.Peer;

/// <summary>
/// Options shared by the PEER trainers: the feed-forward kind and its hyper-parameters, the transformer's size,
/// how long to train and how. Public fields with documented defaults, as ML.NET's own trainer options are.
/// </summary>
public abstract class PeerTrainerOptionsBase
{
    /// <summary>
    /// Takes the defaults of the model and training fields from the task's model and training settings, where each
    /// task's recommended configuration is stated (<c>LanguageModelOptions</c> and the language model's training options,
    /// <c>TextClassifierOptions</c> and the classifier's): <see cref="ApplyTo"/> maps them back.
    /// </summary>
    private protected PeerTrainerOptionsBase(TransformerOptions model, TrainingLoopOptions training, int epochs)
    {
        Epochs = epochs;
        VocabularySize = TransformerOptions.RecommendedVocabularySize;
        MaxSequenceLength = model.ContextLength;
        ModelDimension = model.ModelDimension;
        Layers = model.Layers;
        AttentionHeads = model.AttentionHeads;
        FeedForward = model.FeedForward;
        SparseBlocks = model.SparseBlocks?.ToArray();
        Experts = model.Peer.Experts;
        Heads = model.Peer.Heads;
        TopK = model.Peer.TopK;
        KeyDimension = model.Peer.KeyDimension;
        QueryBatchNorm = model.Peer.QueryBatchNorm;
        QueryWhitening = model.Peer.QueryWhitening;
        NormalizeSubKeys = model.Peer.NormalizeSubKeys;
        ExpertTablePrecision = model.Peer.ExpertTablePrecision;
        MoeExperts = model.MoeExperts;
        MoeTopK = model.MoeTopK;
        BatchSize = training.BatchSize;
        LearningRate = training.LearningRate;
        WeightDecay = training.WeightDecay;
        WarmupSteps = training.WarmupSteps;
    }

    /// <summary>Name of the input text column (String). Default "Text".</summary>
    public string TextColumnName = "Text";

    /// <summary>The feed-forward block of the sparse transformer blocks (the classifier's one over the pooled text vector): Peer,
    /// Dense, MoE or ProductKeyMemory. Default Peer (language model), ProductKeyMemory (classifier).</summary>
    public FeedForwardKind FeedForward;

    /// <summary>Experts N of a PEER layer (or memory slots of a PKM layer); a perfect square. Default 128² = 16,384.</summary>
    public int Experts;

    /// <summary>Retrieval heads h of the PEER/PKM layer. Default 8 (language model), 4 (classifier).</summary>
    public int Heads;

    /// <summary>Experts retrieved per head k, at most sqrt(<see cref="Experts"/>). Default 16 (language model), 8 (classifier).</summary>
    public int TopK;

    /// <summary>Query and product-key dimension (even). Default 64.</summary>
    public int KeyDimension;

    /// <summary>Batch-normalise the queries of the PEER/PKM router (the paper's query BN). Default true.</summary>
    public bool QueryBatchNorm;

    /// <summary>
    /// With <see cref="QueryBatchNorm"/>, whiten each head's query (decorrelate it by its covariance) instead of scaling each
    /// feature alone, so that a narrow input still spreads retrieval over the experts. Default false (the paper's layer).
    /// </summary>
    public bool QueryWhitening;

    /// <summary>Score queries against unit-length sub-keys, so that no long key wins most retrievals. Default false (the paper's
    /// layer).</summary>
    public bool NormalizeSubKeys;

    /// <summary>
    /// How the PEER layer stores its expert tables and their optimizer moments. Default float32; bfloat16 halves their memory
    /// and the bytes read per retrieved expert (docs/performance.md has the measured speed and quality).
    /// </summary>
    public ExpertTablePrecision ExpertTablePrecision;

    /// <summary>Residual width d of the transformer. Default 128.</summary>
    public int ModelDimension;

    /// <summary>
    /// Transformer blocks. Default 2 (language model); 0 (classifier: the mean of the token embeddings goes through one
    /// residual feed-forward before the head; set 1 or more for bidirectional attention blocks).
    /// </summary>
    public int Layers;

    /// <summary>Self-attention heads; must divide <see cref="ModelDimension"/>. Default 4.</summary>
    public int AttentionHeads;

    /// <summary>Blocks whose feed-forward is <see cref="FeedForward"/>; null (default) means the middle block, as in the paper.</summary>
    public int[]? SparseBlocks;

    /// <summary>Experts of a coarse MoE feed-forward (FeedForward = MoE). Default 8.</summary>
    public int MoeExperts;

    /// <summary>Experts each token is routed to in a coarse MoE. Default 2.</summary>
    public int MoeTopK;

    /// <summary>Token vocabulary: 256 byte tokens plus the most frequent cl100k tokens of the training texts. Default 8,192.</summary>
    public int VocabularySize;

    /// <summary>
    /// Most tokens of a text the model reads: a language model scores longer texts window by window (default 128); a
    /// classifier reads the start and the end of a longer text (default 512).
    /// </summary>
    public int MaxSequenceLength;

    /// <summary>Passes over the training data. Default 1 (language model), 4 (classifier). Ignored when <see cref="TimeBudget"/> is
    /// set.</summary>
    public int Epochs;

    /// <summary>
    /// Optional wall-clock budget for training and its validation passes (reading the data and building the tokenizer come
    /// before it); the schedule's length is fitted to it after warm-up. Default null: train for <see cref="Epochs"/>.
    /// </summary>
    public TimeSpan? TimeBudget;

    /// <summary>Sequences (language model) or texts (classifier) per optimizer step. Default 16 (language model), 32
    /// (classifier; fewer when there are few training texts: <c>PeerTextClassificationTrainer.Options.MinimumStepsPerEpoch</c>).</summary>
    public int BatchSize;

    /// <summary>Peak AdamW learning rate (linear warm-up, cosine decay). Default 1e-3 (language model), 5e-3 (classifier).</summary>
    public double LearningRate;

    /// <summary>AdamW decoupled weight decay on matrices and tables. Default 0.1.</summary>
    public double WeightDecay;

    /// <summary>Linear warm-up steps. Default 20 (language model), 30 (classifier).</summary>
    public int WarmupSteps;

    /// <summary>Seed of initialisation and batch order. Default null: the MLContext's seed, or 1 when it has none.</summary>
    public int? Seed;

    /// <summary>
    /// The TorchSharp device to train and score on. Default "cpu". In this release the trainers run on the CPU only
    /// (their batches, the native kernels and the row-sparse optimizer are CPU code): "cuda" is refused with a message
    /// saying so, and so is "cuda" where no CUDA backend or GPU is present, rather than training silently on the CPU.
    /// </summary>
    public string Device = "cpu";

    /// <summary>Optional data scored after every epoch (classifier) or at the end (language model); reported through the log.</summary>
    public IDataView? ValidationSet;

    /// <summary>
    /// Stops training when cancelled (Fit then throws OperationCanceledException and returns no model). MLContext's own
    /// cancellation (CancelExecution, used by hosts such as Model Builder) is honoured as well. Not saved with the model.
    /// </summary>
    public CancellationToken CancellationToken;

    /// <summary>Optional progress callback (the same reports also go to MLContext.Log). Not saved with the model.</summary>
    public IProgress<PeerTrainingProgress>? Progress;

    /// <summary>Checks every option; the exception names the one that is wrong.</summary>
    internal virtual void Validate()
    {
        if (string.IsNullOrWhiteSpace(TextColumnName))
            throw new ArgumentException($"{nameof(TextColumnName)} must name a column.", nameof(TextColumnName));
        Positive(Epochs, nameof(Epochs));
        Positive(BatchSize, nameof(BatchSize));
        Positive(MaxSequenceLength, nameof(MaxSequenceLength));
        if (!(LearningRate > 0))
            throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate,
                $"{nameof(LearningRate)} must be positive; got {LearningRate}.");
        Training.TrainingLoopOptions.CheckTimeBudget(TimeBudget, WarmupSteps);
        if (TorchDevices.Parse(Device, nameof(Device)).type != TorchSharp.DeviceType.CPU)
            throw new NotSupportedException(
                $"{nameof(Device)} is \"{Device}\": the PEER trainers of this release train and score on the CPU only; use \"cpu\".");
    }

    /// <summary>A trainer's host and its checked options (the exception names the option that is wrong).</summary>
    internal static (IHost Host, T Options) Register<T>(IHostEnvironment env, T options, string trainerName)
        where T : PeerTrainerOptionsBase
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        return (env.Register(trainerName), options);
    }

    /// <summary>
    /// The one mapping of these flat fields onto a model's settings: context, width, depth, attention heads, the
    /// feed-forward kind and the PEER, PKM and MoE layers. Settings without a field here keep <paramref name="model"/>'s own.
    /// </summary>
    internal T ApplyTo<T>(T model) where T : TransformerOptions
    {
        model.ContextLength = MaxSequenceLength;
        model.ModelDimension = ModelDimension;
        model.Layers = Layers;
        model.AttentionHeads = AttentionHeads;
        model.FeedForward = FeedForward;
        model.SparseBlocks = SparseBlocks?.ToArray();
        model.Peer = ApplyToLayer(new PeerOptions());
        model.Peer.ExpertTablePrecision = ExpertTablePrecision;
        model.ProductKeyMemory = ApplyToLayer(new ProductKeyOptions());
        model.MoeExperts = MoeExperts;
        model.MoeTopK = MoeTopK;
        return model;
    }

    // PEER and PKM share the product-key settings; ExpertActivation and Kernels keep the layer's defaults.
    private T ApplyToLayer<T>(T layer) where T : ProductKeyOptions
    {
        layer.Experts = Experts;
        layer.Heads = Heads;
        layer.TopK = TopK;
        layer.KeyDimension = KeyDimension;
        layer.QueryBatchNorm = QueryBatchNorm;
        layer.QueryWhitening = QueryWhitening;
        layer.NormalizeSubKeys = NormalizeSubKeys;
        // Sparse row gradients keep a large expert table's step cost proportional to the rows used.
        layer.SparseGradients = true;
        return layer;
    }
}

/// <summary>A progress report of a PEER trainer (also written to MLContext.Log).</summary>
/// <param name="Epoch">1-based epoch (the language model reports the fraction of data seen as epochs too).</param>
/// <param name="Step">Optimizer steps taken.</param>
/// <param name="TotalSteps">Steps planned.</param>
/// <param name="Loss">Mean training loss since the last report.</param>
/// <param name="TokensPerSecond">Training throughput since the last report.</param>
/// <param name="Elapsed">Time since training started.</param>
/// <param name="Remaining">Estimated time left.</param>
/// <param name="ValidationMetric">Validation accuracy (classifier) or perplexity (language model) when just measured; else null.</param>
public sealed record PeerTrainingProgress(int Epoch, int Step, int TotalSteps, double Loss, double TokensPerSecond, TimeSpan Elapsed,
    TimeSpan Remaining, double? ValidationMetric);
