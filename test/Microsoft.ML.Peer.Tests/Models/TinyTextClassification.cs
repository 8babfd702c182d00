using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;
using Microsoft.ML.Peer.Training;

namespace Microsoft.ML.Peer.Tests.Models;

/// <summary>A toy classification task made in the test: is token <see cref="Marker"/> in the text? Small enough to learn in
/// seconds.</summary>
internal static class TinyTextClassification
{
    public const int Vocabulary = 16;
    public const int Padding = 0;
    public const int Marker = 3;

    public static TextClassifierOptions Options(FeedForwardKind kind) => new()
    {
        VocabularySize = Vocabulary,
        ClassCount = 2,
        PaddingId = Padding,
        ContextLength = 16,
        ModelDimension = 32,
        Layers = 1,
        AttentionHeads = 2,
        FeedForward = kind,
        Peer = new PeerOptions { Experts = 8 * 8, Heads = 2, TopK = 4, KeyDimension = 8, SparseGradients = true },
        ProductKeyMemory = new ProductKeyOptions { Experts = 8 * 8, Heads = 2, TopK = 4, KeyDimension = 8 },
        MoeExperts = 4,
    };

    /// <summary>Training for exactly <paramref name="epochs"/> epochs: early stopping off (its tests turn it on).</summary>
    public static ClassifierTrainingOptions Training(int epochs) => new()
    {
        Seed = 5, BatchSize = 32, LearningRate = 1e-2, WarmupSteps = 10, Epochs = epochs, LogEvery = 5, EarlyStoppingPatience = 0,
        // Batches of 32 whatever the number of texts, as the tests count steps by it.
        MinimumStepsPerEpoch = 0,
    };

    /// <summary>
    /// Texts of 4–12 tokens from 1..15 without the marker; half of them get the marker at one random position.
    /// Label 1 exactly when the marker is present. Padding (0) never occurs in a text.
    /// </summary>
    public static (List<int[]> Tokens, List<int> Labels) Data(int count, int seed)
    {
        var random = new Random(seed);
        var tokens = new List<int[]>(count);
        var labels = new List<int>(count);
        for (int i = 0; i < count; i++)
        {
            var text = new int[random.Next(4, 13)];
            for (int t = 0; t < text.Length; t++)
            {
                int token;
                do token = random.Next(1, Vocabulary); while (token == Marker);
                text[t] = token;
            }
            int label = random.Next(2);
            if (label == 1) text[random.Next(text.Length)] = Marker;
            tokens.Add(text);
            labels.Add(label);
        }
        return (tokens, labels);
    }
}
