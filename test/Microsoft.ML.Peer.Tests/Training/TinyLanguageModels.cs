using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Training;

namespace Microsoft.ML.Peer.Tests.Training;

/// <summary>Tiny models and data made in the test, small enough to train in seconds.</summary>
internal static class TinyLanguageModels
{
    public const int Vocabulary = 24;

    public static LanguageModelOptions Options(FeedForwardKind kind) => new()
    {
        VocabularySize = Vocabulary,
        ContextLength = 16,
        ModelDimension = 32,
        Layers = 2,
        AttentionHeads = 2,
        FeedForward = kind,
        Peer = new PeerOptions { Experts = 8 * 8, Heads = 2, TopK = 4, KeyDimension = 8 },
        ProductKeyMemory = new ProductKeyOptions { Experts = 8 * 8, Heads = 2, TopK = 4, KeyDimension = 8 },
        MoeExperts = 4,
        MoeTopK = 2,
    };

    public static LanguageModelTrainingOptions Training(int steps) => new()
    {
        Seed = 3, BatchSize = 8, SequenceLength = 16, LearningRate = 3e-3, WarmupSteps = 5, MaxSteps = steps, LogEvery = 5,
    };

    /// <summary>A learnable stream: short "words" of the vocabulary, in a random order, with a separator.</summary>
    public static int[] Stream(int length, int seed)
    {
        var words = new[] { new[] { 1, 2, 3 }, new[] { 4, 5 }, new[] { 6, 7, 8, 9 }, new[] { 10, 11 }, new[] { 12, 13, 14 },
            new[] { 15, 16, 17, 18, 19 } };
        var random = new Random(seed);
        var tokens = new List<int>(length);
        while (tokens.Count < length)
        {
            tokens.AddRange(words[random.Next(words.Length)]);
            tokens.Add(0);
        }
        return tokens.Take(length).ToArray();
    }
}
