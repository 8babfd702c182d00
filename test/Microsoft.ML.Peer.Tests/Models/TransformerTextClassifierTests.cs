using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Tests.Models;

[TestClass]
public sealed class TransformerTextClassifierTests
{
    private static Tensor Padded(params int[][] texts)
    {
        int time = texts.Max(t => t.Length);
        var data = new long[texts.Length * time];
        Array.Fill(data, TinyTextClassification.Padding);
        for (int b = 0; b < texts.Length; b++)
            for (int t = 0; t < texts[b].Length; t++) data[b * time + t] = texts[b][t];
        return tensor(data, new long[] { texts.Length, time });
    }

    [TestMethod]
    [DataRow(FeedForwardKind.Dense)]
    [DataRow(FeedForwardKind.MoE)]
    [DataRow(FeedForwardKind.ProductKeyMemory)]
    [DataRow(FeedForwardKind.Peer)]
    [DataRow(FeedForwardKind.Peer, 0)]
    [DataRow(FeedForwardKind.Dense, 0)]
    public void PaddingDoesNotChangeATextsLogits(FeedForwardKind kind, int layers = 2)
    {
        manual_seed(11);
        var options = TinyTextClassification.Options(kind);
        options.Layers = layers;
        if (layers > 0) options.SparseBlocks = Enumerable.Range(0, layers).ToArray();
        using var model = new TransformerTextClassifier(options);
        model.eval();
        using var noGrad = no_grad();
        var text = new[] { 5, 9, 3, 7 };
        var alone = model.forward(Padded(text));
        var batched = model.forward(Padded(new[] { 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12 }, text, new[] { 13 }));
        Assert.AreEqual(2L, alone.shape[1]);
        var difference = (alone[0] - batched[1]).abs().max().item<float>();
        Assert.IsTrue(difference < 1e-5f,
            $"{kind}, {layers} layers: alone {alone[0].str()} vs padded in a batch {batched[1].str()} differ by {difference}");
    }

    [TestMethod]
    [DataRow(1)]
    [DataRow(0)]
    public void PaddingDoesNotFeedTheQueryBatchNormInTraining(int layers)
    {
        float[] RunningMeanAfterOneForward(int padTo)
        {
            manual_seed(12);
            var options = TinyTextClassification.Options(FeedForwardKind.Peer);
            options.Layers = layers;
            using var model = new TransformerTextClassifier(options);
            model.train();
            var texts = new[] { new[] { 5, 9, 3, 7 }, new[] { 1, 2 },
                new int[padTo].Select((_, i) => i < 3 ? 4 : TinyTextClassification.Padding).ToArray() };
            model.forward(Padded(texts));
            var router = model.ProductKeyRouters.Single().Router;
            return router.QueryNorm!.running_mean!.data<float>().ToArray();
        }
        var shortPadding = RunningMeanAfterOneForward(4);
        var longPadding = RunningMeanAfterOneForward(16);
        // Attention over a longer padded row rounds differently, so equal to float precision, not bit for bit;
        // padding that reached the batch norm would move the mean by far more (most of those tokens are padding).
        for (int i = 0; i < shortPadding.Length; i++)
            Assert.AreEqual(shortPadding[i], longPadding[i], 1e-6,
                $"running mean {i}: the batch statistics must come from real tokens only");
    }

    [TestMethod]
    public void ProductKeyLayersAreExposedForTheTrainer()
    {
        using var peer = new TransformerTextClassifier(TinyTextClassification.Options(FeedForwardKind.Peer));
        Assert.AreEqual(0, peer.ProductKeyRouters.Single().Block);
        Assert.AreEqual(2, peer.SparseGradientTables().Count());
        using var dense = new TransformerTextClassifier(TinyTextClassification.Options(FeedForwardKind.Dense));
        Assert.AreEqual(0, dense.ProductKeyRouters.Count());
        Assert.AreEqual(0, dense.SparseGradientTables().Count());
    }

    [TestMethod]
    public void WithoutBlocksThePeerLayerRunsOnThePooledText()
    {
        var options = TinyTextClassification.Options(FeedForwardKind.Peer);
        options.Layers = 0;
        using var model = new TransformerTextClassifier(options);
        Assert.AreEqual(0, model.Blocks.Count);
        Assert.AreEqual(0, model.ProductKeyRouters.Single().Block);
        Assert.AreEqual(2, model.SparseGradientTables().Count());
        using var logits = model.forward(Padded(new[] { 1, 2, 3 }, new[] { 4 }));
        CollectionAssert.AreEqual(new long[] { 2, 2 }, logits.shape);
    }

    [TestMethod]
    public void AnAllPaddingTextGetsFiniteLogits()
    {
        using var model = new TransformerTextClassifier(TinyTextClassification.Options(FeedForwardKind.Peer));
        model.eval();
        using var logits = model.forward(Padded(new[] { TinyTextClassification.Padding }, new[] { 4, 5 }));
        Assert.IsTrue(logits.isfinite().all().item<bool>(), logits.str());
    }

    [TestMethod]
    public void TextsLongerThanTheContextAreRejected()
    {
        using var model = new TransformerTextClassifier(TinyTextClassification.Options(FeedForwardKind.Dense));
        var e = Assert.ThrowsExactly<ArgumentException>(() => model.forward(zeros(1, 17, dtype: ScalarType.Int64)));
        StringAssert.Contains(e.Message, "context length 16");
    }

    [TestMethod]
    public void BidirectionalAttentionSeesLaterTokensAndCausalDoesNot()
    {
        manual_seed(13);
        using var bidirectional = new SelfAttention(8, 2, causal: false);
        manual_seed(13);
        using var causal = new SelfAttention(8, 2);
        using var noGrad = no_grad();
        var x = randn(1, 5, 8);
        var changed = x.clone();
        changed[0, 4] = randn(8);
        Assert.IsTrue((bidirectional.forward(x)[0, 0] - bidirectional.forward(changed)[0, 0]).abs().max().item<float>() > 1e-4f);
        Assert.IsTrue((causal.forward(x)[0, 0] - causal.forward(changed)[0, 0]).abs().max().item<float>() < 1e-6f);
        // The masked causal path (mask and tril combined) equals the fused causal kernel.
        var mask = ones(1, 5, dtype: ScalarType.Bool);
        Assert.IsTrue((causal.forward(x, mask) - causal.forward(x)).abs().max().item<float>() < 1e-5f);
    }

    private static void AssertRejected(Action<TextClassifierOptions> change, string option)
    {
        var options = TinyTextClassification.Options(FeedForwardKind.Peer);
        change(options);
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new TransformerTextClassifier(options));
        Assert.AreEqual(option, e.ParamName);
        StringAssert.Contains(e.Message, option);
    }

    [TestMethod]
    public void InvalidOptionsAreRejectedByName()
    {
        AssertRejected(o => o.ClassCount = 1, "ClassCount");
        AssertRejected(o => o.VocabularySize = 0, "VocabularySize");
        AssertRejected(o => o.PaddingId = TinyTextClassification.Vocabulary, "PaddingId");
        AssertRejected(o => o.PaddingId = -1, "PaddingId");
        AssertRejected(o => o.Layers = -1, "Layers");
        AssertRejected(o => o.AttentionHeads = 3, "AttentionHeads");
        AssertRejected(o => o.ContextLength = 0, "ContextLength");
        AssertRejected(o => o.SparseBlocks = new[] { 1 }, "SparseBlocks");
        AssertRejected(o => o.Peer.Experts = 50, "Experts");
        AssertRejected(o => o.BigramBuckets = -1, "BigramBuckets");
        AssertRejected(o => o.BigramBuckets = 64, "BigramBuckets"); // the tiny options have a block
        AssertRejected(o => o.Pooling = (TextPooling)7, "Pooling");
        AssertRejected(o => o.LinearBagBuckets = -1, "LinearBagBuckets");
        AssertRejected(o => o.LinearBagLength = -1, "LinearBagLength");
        AssertRejected(o => o.Truncation = (TextTruncation)7, "Truncation");
        AssertRejected(o => { o.LinearBag = true; o.ClassCount = 1 << 16; o.VocabularySize = 1 << 13; }, "LinearBagBuckets"); // 2^29 weights
    }

    /// <summary>The tiny options with the linear bag on: inputs up to 12 tokens, of which the encoder reads 6.</summary>
    private static TextClassifierOptions WithLinearBag(TextTruncation truncation, int buckets)
    {
        var options = TinyTextClassification.Options(FeedForwardKind.ProductKeyMemory);
        options.Layers = 0;
        options.Pooling = TextPooling.Attention;
        options.ContextLength = 6;
        options.LinearBag = true;
        options.LinearBagLength = 12;
        options.LinearBagBuckets = buckets;
        options.Truncation = truncation;
        return options;
    }

    [TestMethod]
    [DataRow(TextTruncation.KeepStartAndEnd, 0)]
    [DataRow(TextTruncation.KeepStart, 0)]
    [DataRow(TextTruncation.KeepStartAndEnd, 1)]
    [DataRow(TextTruncation.KeepStart, 1)]
    public void TheEncoderReadsWhatTruncatingToTheContextWouldKeep(TextTruncation truncation, int layers)
    {
        manual_seed(16);
        var options = WithLinearBag(truncation, buckets: 64);
        options.Layers = layers;
        using var model = new TransformerTextClassifier(options);
        using (no_grad())
            foreach (var (name, p) in model.named_parameters())
                if (!name.StartsWith("linear_bag")) p.add_(randn_like(p) * 0.5); // the bag stays zero: only the encoder speaks
        model.eval();
        using var noGrad = no_grad();
        var longText = new[] { 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12 };          // 11 tokens: the encoder reads 6
        var shortText = new[] { 5, 9, 3, 7 };
        // What truncating the text to 6 tokens keeps (TextTruncation's documented rule).
        var truncated = truncation == TextTruncation.KeepStart ? longText[..6] : longText[..3].Concat(longText[^3..]).ToArray();
        var batched = model.forward(Padded(longText, shortText));
        var alone = model.forward(Padded(truncated));
        var shortAlone = model.forward(Padded(shortText));
        Assert.IsTrue((batched[0] - alone[0]).abs().max().item<float>() < 1e-5f, $"{truncation}: {batched[0].str()} vs {alone[0].str()}");
        Assert.IsTrue((batched[1] - shortAlone[0]).abs().max().item<float>() < 1e-5f, "a short text beside a long one");
        var tooLong = Assert.ThrowsExactly<ArgumentException>(() => model.forward(Padded(Enumerable.Range(1, 13).Select(t => t % 15 + 1).ToArray())));
        StringAssert.Contains(tooLong.Message, "input length 12");
    }

    [TestMethod]
    public void TheLinearBagAddsItsTokenAndPairRowsOverTheSquareRootOfTheLength()
    {
        manual_seed(17);
        const int buckets = 64;
        var options = WithLinearBag(TextTruncation.KeepStartAndEnd, buckets);
        using var model = new TransformerTextClassifier(options);
        var tokenTable = model.named_parameters().Single(p => p.name == TransformerTextClassifier.LinearBagTokenTableName).parameter;
        var pairTable = model.named_parameters().Single(p => p.name == TransformerTextClassifier.LinearBagPairTableName).parameter;
        Assert.IsTrue(tokenTable.abs().sum().item<float>() == 0 && pairTable.abs().sum().item<float>() == 0, "the bag starts at zero");
        model.eval();
        using var noGrad = no_grad();
        var text = new[] { 5, 9, 3, 7, 5, 1, 2, 4, 6, 8 };                   // 10 tokens: longer than the encoder's 6
        var withoutBag = model.forward(Padded(text, new[] { 2 }));
        tokenTable.add_(randn_like(tokenTable));
        pairTable.add_(randn_like(pairTable));
        tokenTable[TinyTextClassification.Padding].zero_();
        pairTable[buckets].zero_();                                          // the padding rows stay zero, as in training
        var withBag = model.forward(Padded(text, new[] { 2 }));
        static long Bucket(long a, long b) => ((a * TinyTextClassification.Vocabulary + b) * 2654435761L & 0xFFFFFFFFL) % buckets;
        for (int row = 0; row < 2; row++)
        {
            var t = row == 0 ? text : new[] { 2 };
            var expected = zeros(2);
            foreach (int token in t) expected += tokenTable[token];
            for (int i = 0; i + 1 < t.Length; i++) expected += pairTable[Bucket(t[i], t[i + 1])];
            expected /= Math.Sqrt(t.Length);
            var added = withBag[row] - withoutBag[row];
            Assert.IsTrue((added - expected).abs().max().item<float>() < 1e-4f, $"row {row}: added {added.str()}, expected {expected.str()}");
        }
    }

    [TestMethod]
    public void ScoringReadsTheLinearBagsRowsDirectlyAndGetsTheForwardPassLogits()
    {
        manual_seed(19);
        const int buckets = 64;
        using var model = new TransformerTextClassifier(WithLinearBag(TextTruncation.KeepStartAndEnd, buckets));
        using (no_grad())
        {
            foreach (var (_, p) in model.named_parameters()) p.add_(randn_like(p) * 0.5);
            foreach (var table in model.SparseGradientTables().Where(t => t.shape[0] == buckets + 1)) table[-1].zero_();
            model.named_parameters().Single(p => p.name == TransformerTextClassifier.LinearBagTokenTableName).parameter[TinyTextClassification.Padding].zero_();
        }
        model.eval();
        // Longer than the encoder's 6 and the input's 12 (scoring reads the first 12), one token, none, and a repeated pair.
        var texts = new[] { Enumerable.Range(0, 15).Select(t => t % 14 + 1).ToArray(), new[] { 4 }, Array.Empty<int>(), new[] { 3, 5, 3, 5, 3 } };
        var scored = model.PredictLogits(texts, batchSize: 3);
        using var noGrad = no_grad();
        for (int i = 0; i < texts.Length; i++)
        {
            var alone = model.forward(model.Batch(texts, new[] { i }));
            for (int c = 0; c < scored[i].Length; c++)
                Assert.AreEqual(alone[0, c].item<float>(), scored[i][c], 1e-5f, $"text {i}, class {c}");
        }
        Assert.AreEqual(TransformerTextClassifier.PairBucket(3, 5, buckets, TinyTextClassification.Vocabulary),
            ((3L * TinyTextClassification.Vocabulary + 5) * 2654435761L & 0xFFFFFFFFL) % buckets);
        var bad = Assert.ThrowsExactly<ArgumentException>(() => model.PredictLogits(new[] { new[] { 2, TinyTextClassification.Vocabulary } }, 1));
        StringAssert.Contains(bad.Message, $"Token id {TinyTextClassification.Vocabulary} at position 1");
    }

    [TestMethod]
    public void TheLinearBagTrainsOnlyTheRowsOfItsTextsTokensAndPairs()
    {
        manual_seed(18);
        const int buckets = 1 << 10;
        using var model = new TransformerTextClassifier(WithLinearBag(TextTruncation.KeepStartAndEnd, buckets));
        model.train();
        var texts = new[] { new[] { 5, 9, 3, 7, 1, 2, 4, 6, 8 }, new[] { 4 } };
        var (loss, _, _) = model.Loss(Padded(texts), tensor(new long[] { 0, 1 }));
        loss.backward();
        var names = model.SparseGradientTableNames().ToList();
        CollectionAssert.IsSubsetOf(new[] { TransformerTextClassifier.LinearBagTokenTableName, TransformerTextClassifier.LinearBagPairTableName }, names);
        var tokens = model.named_parameters().Single(p => p.name == TransformerTextClassifier.LinearBagTokenTableName).parameter;
        Assert.IsTrue(tokens.grad!.is_sparse, "sparse rows");
        CollectionAssert.AreEquivalent(new long[] { 1, 2, 3, 4, 5, 6, 7, 8, 9 }, tokens.grad.SparseIndices[0].data<long>().Distinct().ToArray(),
            "every token of both texts, all 9 of the long one (past the encoder's 6), and never padding");
    }

    [TestMethod]
    [DataRow(TextPooling.Mean, 0)]
    [DataRow(TextPooling.Max, 0)]
    [DataRow(TextPooling.MeanAndMax, 0)]
    [DataRow(TextPooling.Attention, 0)]
    [DataRow(TextPooling.Attention, 1)]
    [DataRow(TextPooling.Mean, 0, 64)]
    [DataRow(TextPooling.Attention, 0, 64)]
    public void PaddingDoesNotChangeATextsLogitsWithAnyPooling(TextPooling pooling, int layers, int bigramBuckets = 0)
    {
        manual_seed(13);
        var options = TinyTextClassification.Options(FeedForwardKind.Peer);
        options.Layers = layers;
        options.Pooling = pooling;
        options.BigramBuckets = bigramBuckets;
        using var model = new TransformerTextClassifier(options);
        using (no_grad())
        {
            foreach (var (_, p) in model.named_parameters()) p.add_(randn_like(p) * 0.5); // the query and the pair table start at 0
            // The pair table's last row is its padding row, which no gradient reaches: it stays zero.
            foreach (var table in model.SparseGradientTables().Where(t => t.shape[0] == bigramBuckets + 1)) table[-1].zero_();
        }
        model.eval();
        using var noGrad = no_grad();
        var text = new[] { 5, 9, 3, 7 };
        var alone = model.forward(Padded(text));
        var batched = model.forward(Padded(new[] { 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12 }, text, new[] { 13 }));
        var difference = (alone[0] - batched[1]).abs().max().item<float>();
        Assert.IsTrue(difference < 1e-5f, $"{pooling}, {layers} layers, {bigramBuckets} buckets: alone {alone[0].str()} vs padded {batched[1].str()}");
    }

    [TestMethod]
    public void AttentionPoolingStartsAsTheMean()
    {
        float[] Logits(TextPooling pooling)
        {
            manual_seed(14);
            var options = TinyTextClassification.Options(FeedForwardKind.Peer);
            options.Layers = 0;
            options.Pooling = pooling;
            using var model = new TransformerTextClassifier(options);
            model.eval();
            using var noGrad = no_grad();
            return model.forward(Padded(new[] { 5, 9, 3, 7, 1 }, new[] { 2, 2 })).data<float>().ToArray();
        }
        var mean = Logits(TextPooling.Mean);
        var attention = Logits(TextPooling.Attention);
        for (int i = 0; i < mean.Length; i++) Assert.AreEqual(mean[i], attention[i], 1e-6f, $"logit {i}");
    }

    [TestMethod]
    public void TokenPairsTrainOnlyTheBucketsOfTheirRealPairs()
    {
        manual_seed(15);
        const int buckets = 1 << 12;
        var options = TinyTextClassification.Options(FeedForwardKind.Peer);
        options.Layers = 0;
        options.BigramBuckets = buckets;
        using var model = new TransformerTextClassifier(options);
        model.train();
        var texts = new[] { new[] { 5, 9, 3, 7 }, new[] { 4 }, new[] { 11, 12 } };
        var (loss, _, _) = model.Loss(Padded(texts), tensor(new long[] { 0, 1, 1 }));
        loss.backward();
        var table = model.SparseGradientTables().Single(t => t.shape[0] == buckets + 1); // + the padding row
        Assert.IsTrue(table.grad!.is_sparse, "the pair table's gradient is sparse rows");
        var touched = table.grad.SparseIndices[0].data<long>().ToHashSet();
        // hash(a·V + b) mod buckets, the model's documented bucket of the pair (a, b); padding (0) pairs none.
        static long Bucket(long a, long b) => ((a * TinyTextClassification.Vocabulary + b) * 2654435761L & 0xFFFFFFFFL) % buckets;
        var expected = new[] { Bucket(5, 9), Bucket(9, 3), Bucket(3, 7), Bucket(11, 12) }.ToHashSet();
        CollectionAssert.AreEquivalent(expected.ToList(), touched.ToList());
        CollectionAssert.Contains(model.SparseGradientTableNames().ToList(), TransformerTextClassifier.BigramTableName);
    }

    [TestMethod]
    public void OptionsSavedBeforePoolingAndTokenPairsReadAsTheModelTheyDescribe()
    {
        var saved = System.Text.Json.Nodes.JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(
            TextClassifierOptions.Recommended(vocabularySize: 300, classCount: 2, paddingId: 299)))!.AsObject();
        Assert.IsTrue(saved.Remove(nameof(TextClassifierOptions.BigramBuckets)) && saved.Remove(nameof(TextClassifierOptions.Pooling)));
        foreach (var name in new[] { nameof(TextClassifierOptions.LinearBag), nameof(TextClassifierOptions.LinearBagBuckets),
                     nameof(TextClassifierOptions.LinearBagLength), nameof(TextClassifierOptions.Truncation) })
            Assert.IsTrue(saved.Remove(name), name);
        var read = System.Text.Json.JsonSerializer.Deserialize<TextClassifierOptions>(saved.ToJsonString())!;
        Assert.AreEqual(0, read.BigramBuckets, "no pair table, as before");
        Assert.AreEqual(TextPooling.Mean, read.Pooling, "mean pooling, as before");
        Assert.IsFalse(read.LinearBag, "no linear bag, as before");
        Assert.AreEqual(read.ContextLength, read.InputLength, "inputs as long as the context, as before");
    }

    [TestMethod]
    public void RecommendedOptionsAreValidAndCloneDeeply()
    {
        var options = TextClassifierOptions.Recommended(vocabularySize: 8192, classCount: 2, paddingId: 8191);
        options.Validate();
        Assert.AreEqual(TextClassifierOptions.RecommendedFeedForward, options.FeedForward);
        Assert.AreEqual(FeedForwardKind.ProductKeyMemory, new TextClassifierOptions().FeedForward, "the constructor's is the recommended one");
        Assert.AreEqual(TextClassifierOptions.RecommendedContextLength, options.ContextLength);
        Assert.AreEqual(TextClassifierOptions.RecommendedPooling, options.Pooling);
        Assert.IsTrue(options.LinearBag);
        Assert.AreEqual((2048, 1 << 18, 2048), (options.LinearBagLength, options.LinearBagBuckets, options.InputLength));
        Assert.AreEqual(1 << 18, TextClassifierOptions.RecommendedLinearBagBuckets(15));
        Assert.AreEqual(1 << 16, TextClassifierOptions.RecommendedLinearBagBuckets(35), "the largest power of two within 2^22 weights");
        Assert.AreEqual(64, TextClassifierOptions.RecommendedLinearBagBuckets(1 << 16));
        var manyClasses = TextClassifierOptions.Recommended(vocabularySize: 8192, classCount: 3000, paddingId: 8191);
        Assert.IsFalse(manyClasses.LinearBag, "(8,192 + 1,024) × 3,000 weights pass 2^24");
        Assert.AreEqual(512, manyClasses.InputLength);
        Assert.AreEqual(TextPooling.Mean, new TextClassifierOptions().Pooling, "the constructor's reads older models as they were");
        var copy = options.Clone();
        copy.Peer.Experts = 4;
        Assert.AreNotEqual(4, options.Peer.Experts);
        Assert.AreEqual(8191, copy.PaddingId);
    }

    [TestMethod]
    [DataRow(0)]
    [DataRow(1)]
    public void MoeLoadBalancingLossReachesTheClassifiersLoss(int layers)
    {
        manual_seed(13);
        var options = TinyTextClassification.Options(FeedForwardKind.MoE);
        options.Layers = layers;
        options.MoeLoadBalancingWeight = 0.5;
        options.LabelSmoothing = 0;  // so the training loss is the plain cross-entropy plus the auxiliary term
        using var model = new TransformerTextClassifier(options);
        model.train();
        var (loss, crossEntropy, _) =
            model.Loss(Padded(new[] { 5, 9, 3, 7 }, new[] { 1, 2 }, new[] { 4, 6, 8 }), tensor(new long[] { 1, 0, 0 }));
        var moe = layers == 0
            ? model.named_modules().Select(m => m.module).OfType<MixtureOfExpertsFeedForward>().Single()
            : (MixtureOfExpertsFeedForward)model.Blocks.Single().FeedForward;
        Assert.IsNotNull(moe.AuxiliaryLoss, $"{layers} layers: the MoE feed-forward computes its load-balancing loss in training");
        var expected = crossEntropy.item<float>() + 0.5f * moe.AuxiliaryLoss!.item<float>();
        Assert.AreEqual(expected, loss.item<float>(), 1e-5, $"{layers} layers: loss = cross-entropy + weight × MoE auxiliary loss");
        Assert.IsTrue(loss.item<float>() > crossEntropy.item<float>() + 0.1f,
            $"{layers} layers: the load-balancing term (≥ 0.5 × 1) must be in the loss");
    }

    [TestMethod]
    public void ScoringLeavesTheMoeLayerAsTrainingLeftIt()
    {
        // Scoring threads share one model and run forward at once; an evaluation pass that disposed the last training term
        // let two threads free the same native tensor (a runtime crash on brown-genre's cross-validation).
        manual_seed(13);
        using var model = new TransformerTextClassifier(TinyTextClassification.Options(FeedForwardKind.MoE));
        var moe = model.named_modules().Select(m => m.module).OfType<MixtureOfExpertsFeedForward>().Single();
        var tokens = Padded(new[] { 5, 9, 3, 7 }, new[] { 1, 2 }, new[] { 4, 6, 8 });
        model.train();
        using (var logits = model.forward(tokens)) { }
        var term = moe.AuxiliaryLoss;
        Assert.IsNotNull(term);
        float value = term.item<float>();
        model.eval();
        using (no_grad())
        using (var logits = model.forward(tokens)) { }
        Assert.AreSame(term, moe.AuxiliaryLoss, "an evaluation pass must not replace the training term");
        Assert.IsFalse(term.IsInvalid, "an evaluation pass must not dispose the training term");
        Assert.AreEqual(value, term.item<float>());
    }
    [TestMethod]
    [DataRow(FeedForwardKind.Peer, true, 2)]
    [DataRow(FeedForwardKind.Peer, false, 2)]
    [DataRow(FeedForwardKind.ProductKeyMemory, true, 2)]
    [DataRow(FeedForwardKind.Peer, true, 0)]
    [DataRow(FeedForwardKind.Dense, false, 0)]
    public void ExpertTableNamesNameTheExpertTables(FeedForwardKind kind, bool sparse, int layers)
    {
        // The optimizer finds the expert tables by these names in named_parameters(); they must name, in order,
        // the very tables the model hands out.
        var options = TinyTextClassification.Options(kind);
        options.Layers = layers;
        options.Peer.SparseGradients = sparse;
        options.ProductKeyMemory.SparseGradients = sparse;
        using var model = new TransformerTextClassifier(options);
        var byName = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var names = model.ExpertTableNames().ToList();
        var tables = model.named_modules().Select(m => m.module).SelectMany(m => m switch
        {
            PeerLayer p => new[] { p.DownWeights, p.UpWeights },
            ProductKeyMemory k => new[] { k.Values },
            _ => Array.Empty<TorchSharp.Modules.Parameter>(),
        }).ToList();
        Assert.AreEqual(kind == FeedForwardKind.Dense ? 0 : kind == FeedForwardKind.Peer ? 2 : 1, names.Count);
        Assert.AreEqual(tables.Count, names.Count);
        for (int i = 0; i < names.Count; i++)
        {
            Assert.IsTrue(byName.ContainsKey(names[i].Name), names[i].Name);
            Assert.AreEqual(sparse, names[i].Sparse);
            using (no_grad()) tables[i].add_(1);
            Assert.AreEqual(0f, (byName[names[i].Name] - tables[i]).abs().max().item<float>(),
                $"{names[i].Name} is the table's own storage");
        }
        CollectionAssert.AreEqual(model.SparseGradientTables().Select(t => t.shape[0]).ToList(),
            names.Where(n => n.Sparse).Select(n => byName[n.Name].shape[0]).ToList());
    }
}
