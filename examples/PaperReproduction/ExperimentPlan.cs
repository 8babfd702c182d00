using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Training;

namespace PaperReproduction;

/// <summary>
/// Model and compute size of one budget. Every run trains for the same FLOPs: those of the reference run
/// (PEER, N = 1024², h = 8, k = 16, query BN) for <see cref="ReferenceSteps"/> steps of
/// <see cref="BatchSize"/>×<see cref="SequenceLength"/> tokens; a run whose forward pass costs F FLOPs per token gets
/// round(ReferenceSteps · F_reference / F) steps.
/// </summary>
/// <param name="AssumedSecondsPerStep">
/// Seconds per training step assumed for the time estimate printed before the runs, by run name; a run not listed
/// uses <paramref name="DefaultSecondsPerStep"/>.
/// </param>
/// <param name="LowReferenceSteps">
/// Reference steps of the second, lower compute budget at which the isoFLOP runs are trained again (the paper's Figure 1 has
/// one curve per budget); 0 trains them at one budget only.
/// </param>
/// <param name="EvaluationTokens">Validation tokens scored at the end of each run, from the start of the stream; 0 scores them all.</param>
/// <param name="DiagnosticPoints">
/// Steps (spread evenly in log scale, the last step included) at which each run measures validation perplexity and, for PEER
/// and PKM, expert usage with running and batch statistics over <see cref="DiagnosticTokens"/> tokens: the usage_curve.
/// </param>
internal sealed record Budget(string Name, int Dimension, int Layers, int AttentionHeads, int KeyDimension, int BatchSize,
    int SequenceLength, int ReferenceSteps, int WarmupSteps, int EvaluationTokens, double LearningRate,
    IReadOnlyDictionary<string, double> AssumedSecondsPerStep, double DefaultSecondsPerStep, double AssumedEvaluationSecondsPerRun,
    int LowReferenceSteps = 0, int DiagnosticPoints = 6, int DiagnosticTokens = 8_192)
{
    public const int Vocabulary = 8192;
    public const int Seed = 1;

    // Assumed seconds per step of 16×128 tokens at d = 128 on the 2-core machine when it is quiet: dense as measured
    // at the start of a small run, the others in the ratios of docs/performance.md's LM steps (PEER 1024² ≈ 2× dense).
    // PKM is assumed slower than PEER: its value sum runs on composed TorchSharp ops, not the native kernel. Only the
    // printed estimate and the budget's size depend on them; each run's step count comes from the FLOP budget.
    private static readonly Dictionary<string, double> SmallStepSeconds = new()
    {
        // Dense measured 0.28–0.31 s per step on a quiet machine (2026-12-01); the others scaled from it.
        ["dense"] = 0.29,
        ["moe-8e-top2"] = 0.38,
        ["pkm-1024sq-h8-k32"] = 0.95,
        ["peer-1024sq-h8-k16"] = 0.57,
        ["peer-1024sq-h8-k16-nobn"] = 0.57,
        ["peer-512sq-h8-k16"] = 0.48,
        ["peer-512sq-h8-k16-nobn"] = 0.48,
        ["peer-128sq-h8-k16"] = 0.38,
        ["peer-128sq-h8-k16-nobn"] = 0.38,
        ["peer-256sq-h16-k8"] = 0.48,
    };

    /// <summary>
    /// small: d = 128, 4 blocks, d_key = 64, batches of 16×128 tokens, 180 reference steps (0.37 M tokens for the
    /// reference run, about 0.28 of an epoch of Brown's training split; 180–230 steps per run), 32,768 evaluation
    /// tokens. With the step times assumed below (measured for dense, scaled for the rest), the 14 runs take ≈ 24 min
    /// plus ≈ 5 s per run to build, evaluate and free the model.
    /// </summary>
    public static Budget Small { get; } =
        new("small", Dimension: 128, Layers: 4, AttentionHeads: 2, KeyDimension: 64, BatchSize: 16, SequenceLength: 128,
        ReferenceSteps: 180, WarmupSteps: 30, EvaluationTokens: 32_768, LearningRate: 3e-3,
        AssumedSecondsPerStep: SmallStepSeconds, DefaultSecondsPerStep: 0.42, AssumedEvaluationSecondsPerRun: 5);

    /// <summary>tiny: small's models for 8 (and 4) reference steps and 4,096 evaluation tokens, to smoke-test the program (≈ 3
    /// min).</summary>
    public static Budget Tiny { get; } = Small with
    {
        Name = "tiny",
        ReferenceSteps = 8,
        LowReferenceSteps = 4,
        WarmupSteps = 2,
        EvaluationTokens = 4_096,
        AssumedEvaluationSecondsPerRun = 1,
        DiagnosticPoints = 2,
        DiagnosticTokens = 2_048,
    };

    /// <summary>
    /// medium: small's models for 1,000 reference steps (2.05 M tokens for the reference run, 1.56 epochs of Brown's
    /// training split) and the isoFLOP runs again at 400; every validation token scored. The peak learning rate is the
    /// one <c>--tune-lr</c> chose for dense on a held-out tenth of the training documents (docs/paper-reproduction.md).
    /// </summary>
    public static Budget Medium { get; } = Small with
    {
        Name = "medium",
        ReferenceSteps = 1000,
        LowReferenceSteps = 400,
        WarmupSteps = 60,
        EvaluationTokens = 0,
        LearningRate = 6e-3,
        AssumedEvaluationSecondsPerRun = 40,
        DiagnosticPoints = 8,
        DiagnosticTokens = 16_384,
    };

    /// <summary>large (a bigger machine): medium's schedule at d = 256, 6 blocks, d_key = 128, 4,000 and 1,600 reference steps.</summary>
    public static Budget Large { get; } = Medium with
    {
        Name = "large",
        Dimension = 256,
        Layers = 6,
        AttentionHeads = 4,
        KeyDimension = 128,
        ReferenceSteps = 4000,
        LowReferenceSteps = 1600,
        WarmupSteps = 200,
        LearningRate = 2e-3,
        AssumedSecondsPerStep = new Dictionary<string, double>(),
        DefaultSecondsPerStep = 1.5,
        AssumedEvaluationSecondsPerRun = 120,
        DiagnosticPoints = 10,
    };

    public static Budget Parse(string name) => name.ToLowerInvariant() switch
    {
        "small" => Small,
        "medium" => Medium,
        "large" => Large,
        "tiny" => Tiny,
        _ => throw new FormatException($"--budget must be tiny, small, medium or large; got '{name}'."),
    };

    /// <summary>Steps at which a run of <paramref name="steps"/> steps records its usage_curve point.</summary>
    public IReadOnlyList<int> DiagnosticSteps(int steps) =>
        Enumerable.Range(1, DiagnosticPoints).Select(i => (int)Math.Round(Math.Pow(steps, (double)i / DiagnosticPoints))).Prepend(0)
            .Where(s => s >= 0 && s <= steps).Distinct().ToList();

    public LanguageModelTrainingOptions Training(int steps) => new()
    {
        Seed = Seed,
        BatchSize = BatchSize,
        SequenceLength = SequenceLength,
        LearningRate = LearningRate,
        WarmupSteps = Math.Min(WarmupSteps, Math.Max(0, steps - 1)),
        MaxSteps = steps,
    };
}

/// <summary>One training run: the feed-forward kind of the middle block and its sparse-layer settings.</summary>
/// <param name="LowCompute">Trained for the budget's lower compute level (<see cref="Budget.LowReferenceSteps"/>).</param>
/// <param name="SparseBlocks">The blocks that hold the sparse layer (null: the middle one).</param>
/// <param name="LearningRate">A peak learning rate other than the budget's (null: the budget's).</param>
/// <param name="InputBatchNorm">Batch-normalise the PEER layer's input before the query projection
/// (<see cref="ProductKeyOptions.InputBatchNorm"/>).</param>
/// <param name="ExpertLearningRateScale">Learning-rate multiplier of the expert tables
/// (<see cref="LanguageModelTrainingOptions.ExpertLearningRateScale"/>).</param>
/// <param name="QueryWhitening">Whiten each head's query instead of batch-normalising it
/// (<see cref="ProductKeyOptions.QueryWhitening"/>).</param>
/// <param name="NormalizeSubKeys">Score against unit-length sub-keys (<see cref="ProductKeyOptions.NormalizeSubKeys"/>).</param>
internal sealed record RunSpec(string Name, IReadOnlyList<string> Experiments, FeedForwardKind Kind, int Experts = 0, int Heads = 0,
    int TopK = 0, bool QueryBatchNorm = true, bool LowCompute = false, int[]? SparseBlocks = null, double? LearningRate = null,
    bool InputBatchNorm = false, double ExpertLearningRateScale = 1, bool QueryWhitening = false, bool NormalizeSubKeys = false)
{
    public const string Remedy = "remedy";
    public const string IsoFlop = "isoflop";
    public const string IsoFlopLow = "isoflop-low";
    public const string QueryBn = "query-bn";
    public const string Granularity = "granularity";

    /// <summary>MoE: E experts, top-k, each expert a d → 2d → d MLP, so the active FFW FLOPs equal the dense 4d FFW's.</summary>
    public const int MoeExperts = 8, MoeTopK = 2, MoeHiddenMultiple = 2;

    public LanguageModelOptions ModelOptions(Budget budget)
    {
        var options = new LanguageModelOptions
        {
            VocabularySize = Budget.Vocabulary,
            ContextLength = budget.SequenceLength,
            ModelDimension = budget.Dimension,
            Layers = budget.Layers,
            AttentionHeads = budget.AttentionHeads,
            FeedForward = Kind,
            MoeExperts = MoeExperts,
            MoeTopK = MoeTopK,
            MoeHiddenDimension = MoeHiddenMultiple * budget.Dimension,
            SparseBlocks = SparseBlocks?.ToArray(),
        };
        if (Kind == FeedForwardKind.Peer)
            options.Peer = new PeerOptions
            {
                Experts = Experts, Heads = Heads, TopK = TopK, KeyDimension = budget.KeyDimension, QueryBatchNorm = QueryBatchNorm,
                SparseGradients = true, InputBatchNorm = InputBatchNorm, QueryWhitening = QueryWhitening,
                NormalizeSubKeys = NormalizeSubKeys
            };
        if (Kind == FeedForwardKind.ProductKeyMemory)
            options.ProductKeyMemory = new ProductKeyOptions
            {
                Experts = Experts, Heads = Heads, TopK = TopK,
                KeyDimension = budget.KeyDimension, QueryBatchNorm = QueryBatchNorm, SparseGradients = true
            };
        return options;
    }

    private static RunSpec Peer(int n, int h, int k, bool bn, params string[] experiments) =>
        new($"peer-{n}sq-h{h}-k{k}{(bn ? "" : "-nobn")}", experiments, FeedForwardKind.Peer, n * n, h, k, bn);

    /// <summary>The reference run whose FLOPs fix every budget.</summary>
    public static RunSpec Reference { get; } = Peer(1024, 8, 16, true, IsoFlop, QueryBn);

    private static readonly RunSpec[] IsoFlopRuns =
    {
        new RunSpec("dense", new[] { IsoFlop }, FeedForwardKind.Dense),
        new RunSpec("moe-8e-top2", new[] { IsoFlop }, FeedForwardKind.MoE),
        new RunSpec("pkm-1024sq-h8-k32", new[] { IsoFlop }, FeedForwardKind.ProductKeyMemory, 1024 * 1024, 8, 32, true),
        Reference,
        Peer(256, 8, 16, true, IsoFlop, QueryBn, Granularity),
    };

    /// <summary>The isoFLOP runs again at the lower compute level, named with a "-low" suffix.</summary>
    private static IEnumerable<RunSpec> LowComputeRuns
        => IsoFlopRuns.Select(r => r with { Name = r.Name + "-low", Experiments = new[] { IsoFlopLow }, LowCompute = true });

    /// <summary>
    /// Attempts to keep PEER 1024²'s experts in use (issue 11), each at the low compute level beside the paper's layer
    /// (peer-1024sq-h8-k16-low): an input batch norm (the collapse is in the layer's input, a few directions carrying its
    /// variance), the layer moved to the first block (its input is the embeddings, upstream of the collapsing residual
    /// stream), a lower peak learning rate, which delayed the collapse at the small budget, the expert tables at 4× and
    /// ¼× the rate of the rest (PKM, Memory Layers and UltraMem give values their own rate), unit-length sub-keys (the
    /// longest raw sub-keys are hubs that win for most queries), whitened queries (a few input directions carry nearly all
    /// the variance), and both.
    /// </summary>
    private static IEnumerable<RunSpec> RemedyRuns
    {
        get
        {
            var paper = Reference with { Name = Reference.Name + "-low", Experiments = new[] { Remedy }, LowCompute = true };
            yield return paper with { Name = paper.Name + "-inputbn", InputBatchNorm = true };
            yield return paper with { Name = paper.Name + "-block0", SparseBlocks = new[] { 0 } };
            yield return paper with { Name = paper.Name + "-lr1e-3", LearningRate = 1e-3 };
            yield return paper with { Name = paper.Name + "-whiten-unitkeys", QueryWhitening = true, NormalizeSubKeys = true };
            yield return paper with { Name = paper.Name + "-unitkeys", NormalizeSubKeys = true };
            yield return paper with { Name = paper.Name + "-whiten", QueryWhitening = true };
            yield return paper with { Name = paper.Name + "-tablelr4", ExpertLearningRateScale = 4 };
            yield return paper with { Name = paper.Name + "-tablelr0.25", ExpertLearningRateScale = 0.25 };
            // The best of them at the main compute level too: does usage keep climbing with 2.5× the tokens?
            yield return Reference with
            {
                Name = Reference.Name + "-whiten-unitkeys",
                Experiments = new[] { Remedy },
                QueryWhitening = true,
                NormalizeSubKeys = true
            };
        }
    }

    /// <summary>The budget's training options for this run: its own peak learning rate if it has one.</summary>
    public LanguageModelTrainingOptions Training(Budget budget)
    {
        var training = (budget with { LearningRate = LearningRate ?? budget.LearningRate }).Training(Steps(budget));
        training.ExpertLearningRateScale = ExpertLearningRateScale;
        return training;
    }

    /// <summary>
    /// Every run of <paramref name="budget"/>, once (a run that belongs to several experiments, e.g. PEER 1024² with BN, is
    /// trained once), the most informative first so that a budget cut short still answers the main questions.
    /// </summary>
    public static IReadOnlyList<RunSpec> For(Budget budget) =>
        new[] { All[0], All[3], All[5], All[1], All[2], All[4] }
            .Concat(budget.LowReferenceSteps > 0 ? LowComputeRuns : Enumerable.Empty<RunSpec>())
            .Concat(All.Skip(6))
            .Concat(budget.LowReferenceSteps > 0 ? RemedyRuns : Enumerable.Empty<RunSpec>()).ToList();

    /// <summary>Every run at the main compute level: the isoFLOP runs, the query BN ablation and the granularity sweep.</summary>
    public static IReadOnlyList<RunSpec> All { get; } = IsoFlopRuns.Concat(new[]
    {
        // 2. Query batch-norm ablation (1024² and 256² with BN above).
        Peer(1024, 8, 16, false, QueryBn),
        Peer(512, 8, 16, true, QueryBn),
        Peer(512, 8, 16, false, QueryBn),
        Peer(256, 8, 16, false, QueryBn),
        Peer(128, 8, 16, true, QueryBn),
        Peer(128, 8, 16, false, QueryBn),
        // 3. Granularity at h·k = 128, N = 256² (h = 8, k = 16 above).
        Peer(256, 2, 64, true, Granularity),
        Peer(256, 4, 32, true, Granularity),
        Peer(256, 16, 8, true, Granularity),
    }).ToList();

    /// <summary>Training steps that give this run the reference run's training FLOPs.</summary>
    public int Steps(Budget budget) =>
        Math.Max(1, (int)Math.Round((LowCompute ? budget.LowReferenceSteps : budget.ReferenceSteps)
                                    * (double)FlopCounter.ForwardPerToken(Reference.ModelOptions(budget)).Total
                                    / FlopCounter.ForwardPerToken(ModelOptions(budget)).Total));
}
