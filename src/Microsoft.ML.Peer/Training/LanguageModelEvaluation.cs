using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Training;

/// <summary>Validation perplexity and expert usage of a language model over a token stream (used by the trainer and the ML.NET
/// transformer).</summary>
internal static class LanguageModelEvaluation
{
    /// <summary>
    /// Mean cross-entropy and perplexity over consecutive, non-overlapping windows of <paramref name="tokens"/>
    /// in evaluation mode, and the expert usage of each product-key layer over the same pass.
    /// </summary>
    /// <param name="model">The model; left in the mode it was in.</param>
    /// <param name="tokens">The evaluation token stream.</param>
    /// <param name="sequenceLength">Window length (at most the model's context).</param>
    /// <param name="batchSize">Windows per forward pass.</param>
    /// <param name="maxTokens">Score at most this many tokens from the start of the stream; 0 scores all.</param>
    /// <param name="statistics">What normalises the product-key queries: the running statistics or each batch's own.</param>
    public static LanguageModelEvaluationResult Evaluate(TransformerLanguageModel model, int[] tokens, int sequenceLength, int batchSize,
        int maxTokens = 0,
        QueryNormStatistics statistics = QueryNormStatistics.Running)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokens);
        if (sequenceLength <= 0)
            throw new ArgumentOutOfRangeException(nameof(sequenceLength), sequenceLength, "sequenceLength must be positive.");
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "batchSize must be positive.");
        if (maxTokens < 0) throw new ArgumentOutOfRangeException(nameof(maxTokens), maxTokens, "maxTokens must not be negative.");
        if (maxTokens > 0 && tokens.Length > maxTokens + 1)
            tokens = tokens[..(maxTokens + 1)];
        int length = Math.Min(sequenceLength, tokens.Length - 1);
        if (length < 1) throw new ArgumentException("At least two evaluation tokens are needed.", nameof(tokens));
        int windows = (tokens.Length - 1) / length;
        var routers = model.ProductKeyRouters.ToList();
        foreach (var (_, router) in routers)
        {
            router.Usage.Reset();
            router.Usage.Enabled = true;
            router.EvaluationStatistics = statistics;
        }
        bool wasTraining = model.training;
        model.eval();
        double totalLoss = 0;
        long count = 0;
        try
        {
            using var noGrad = no_grad();
            for (int first = 0; first < windows; first += batchSize)
            {
                using var scope = NewDisposeScope();
                int batch = Math.Min(batchSize, windows - first);
                var inputs = new long[batch * length];
                var targets = new long[batch * length];
                for (int b = 0; b < batch; b++)
                    for (int t = 0; t < length; t++)
                    {
                        int at = (first + b) * length + t;
                        inputs[b * length + t] = tokens[at];
                        targets[b * length + t] = tokens[at + 1];
                    }
                var (_, crossEntropy) =
                    model.Loss(tensor(inputs, new long[] { batch, length }), tensor(targets, new long[] { batch, length }));
                totalLoss += crossEntropy.item<float>() * (double)(batch * length);
                count += batch * length;
            }
        }
        finally
        {
            foreach (var (_, router) in routers)
            {
                router.Usage.Enabled = false;
                router.EvaluationStatistics = QueryNormStatistics.Running;
            }
            model.train(wasTraining);
        }
        var usage = routers.ToDictionary(r => r.Block, r => r.Router.Usage.Compute());
        foreach (var (_, router) in routers) router.Usage.Reset();
        double mean = totalLoss / count;
        return new LanguageModelEvaluationResult(mean, Math.Exp(mean), count, usage);
    }

    /// <summary>
    /// Re-estimates every query batch norm's running mean and variance from the raw queries of <paramref name="batches"/>
    /// (all their tokens pooled), normalising with each batch's own statistics during the pass as training does. BN's running
    /// statistics are an exponential average that trails the queries while they still change (early in training, or
    /// after a learning-rate change); this replaces them with the exact statistics of the given data. Returns the
    /// routers re-estimated.
    /// </summary>
    /// <param name="model">The model; left in the mode it was in.</param>
    /// <param name="batches">How many batches.</param>
    /// <param name="batchAt">Token batch [B, T] (int64) number i; called inside the pass's dispose scope.</param>
    public static int ReestimateQueryNorm(TransformerLanguageModel model, int batches, Func<int, Tensor> batchAt)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(batchAt);
        if (batches <= 0) throw new ArgumentOutOfRangeException(nameof(batches), batches, $"{nameof(batches)} must be positive.");
        var routers = model.ProductKeyRouters.Select(r => r.Router).Where(r => r.NormalizesQueries || r.InputNorm is not null).ToList();
        if (routers.Count == 0) return 0;
        var moments = routers.Select(r => r.NewQueryMoments()).ToList();
        var inputMoments = routers.Select(_ => new QueryMomentSums()).ToList();
        bool wasTraining = model.training;
        model.eval();
        try
        {
            for (int i = 0; i < routers.Count; i++)
            {
                routers[i].QueryMoments = moments[i];
                routers[i].InputMoments = inputMoments[i];
                routers[i].EvaluationStatistics = QueryNormStatistics.Batch;
            }
            using var noGrad = no_grad();
            for (int i = 0; i < batches; i++)
            {
                using var scope = NewDisposeScope();
                model.forward(batchAt(i));
            }
            // The input norm's statistics are exact already (the pass normalised inputs by their batch statistics, and the
            // query moments were gathered downstream of that); setting both from this pass keeps them consistent.
            for (int i = 0; i < routers.Count; i++)
            {
                routers[i].SetQueryNormStatistics(moments[i]);
                routers[i].SetInputNormStatistics(inputMoments[i]);
            }
            return routers.Count;
        }
        finally
        {
            for (int i = 0; i < routers.Count; i++)
            {
                routers[i].QueryMoments = routers[i].InputMoments = null;
                routers[i].EvaluationStatistics = QueryNormStatistics.Running;
                moments[i].Dispose();
                inputMoments[i].Dispose();
            }
            model.train(wasTraining);
        }
    }
}
