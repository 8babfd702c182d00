using System.Reflection;
using Microsoft.ML.Data;

namespace Microsoft.ML.Peer.Tests.MLNet;

/// <summary>Small text data sets made in the test, and tiny trainer options that fit them in seconds.</summary>
internal static class PluginTestData
{
    public sealed class TextRow
    {
        public string? Text { get; set; }
    }

    public sealed class LabeledText
    {
        public string? Text { get; set; }
        public string Label { get; set; } = "";
    }

    private static readonly string[] Subjects = { "the cat", "a dog", "the old man", "my sister", "the bird" };
    private static readonly string[] Verbs = { "sees", "likes", "follows", "finds", "watches" };
    private static readonly string[] Objects = { "the ball", "a red house", "the river", "some bread", "the garden" };

    /// <summary>Sentences from a tiny grammar: learnable structure, so perplexity falls well below the vocabulary size.</summary>
    public static List<TextRow> Sentences(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => new TextRow
        {
            Text = $"{Subjects[random.Next(Subjects.Length)]} {Verbs[random.Next(Verbs.Length)]} {Objects[random.Next(Objects.Length)]}.",
        }).ToList();
    }

    /// <summary>Texts about animals or about food: the topic words decide the class, filler words do not.</summary>
    public static List<LabeledText> Topics(int count, int seed, int classes = 2)
    {
        var vocabularies = new[]
        {
            new[] { "cat", "dog", "horse", "bird", "mouse", "lion" },
            new[] { "bread", "cheese", "apple", "soup", "rice", "cake" },
            new[] { "train", "car", "boat", "plane", "bus", "bike" },
        };
        var names = new[] { "animals", "food", "travel" };
        var filler = new[] { "today", "we", "talked", "about", "the", "and", "a", "very", "nice" };
        var random = new Random(seed);
        var rows = new List<LabeledText>();
        for (int i = 0; i < count; i++)
        {
            int label = random.Next(classes);
            var words =
                Enumerable.Range(0, 8).Select(j => j % 2 == 0 ? vocabularies[label][random.Next(6)] : filler[random.Next(filler.Length)]);
            rows.Add(new LabeledText { Text = string.Join(' ', words), Label = names[label] });
        }
        return rows;
    }

    public static PeerLanguageModelTrainer.Options TinyLanguageModel() => Tiny(new PeerLanguageModelTrainer.Options
    {
        Layers = 2,
        MaxSequenceLength = 24,
        BatchSize = 8,
        Epochs = 12,
        LearningRate = 6e-3,
        LogEvery = 5,
    });

    public static PeerTextClassificationTrainer.Options TinyClassifier() => Tiny(new PeerTextClassificationTrainer.Options
    {
        Layers = 1,
        MaxSequenceLength = 32,
        BatchSize = 16,
        Epochs = 6,
        LearningRate = 3e-3,
        EnsembleSize = 1,   // one model: the tests that need an ensemble ask for one (ClassifierEnsembleTests)
    });

    /// <summary>The size both tiny models share: a 300-token vocabulary, d = 32, 16² experts, 2 heads of top-4 over 16-dimensional
    /// keys.</summary>
    private static T Tiny<T>(T options) where T : PeerTrainerOptionsBase
    {
        options.VocabularySize = 300;
        options.ModelDimension = 32;
        options.AttentionHeads = 2;
        options.Experts = 16 * 16;
        options.Heads = 2;
        options.TopK = 4;
        options.KeyDimension = 16;
        options.WarmupSteps = 5;
        return options;
    }

    /// <summary>SchemaShape.Create, which ML.NET 5.0.1 keeps internal (pipelines call it for their estimators).</summary>
    public static SchemaShape Shape(DataViewSchema schema) =>
        (SchemaShape)typeof(SchemaShape).GetMethod("Create", BindingFlags.NonPublic | BindingFlags.Static)!
            .Invoke(null, new object[] { schema })!;

    /// <summary>MLContext.CancelExecution, internal in ML.NET 5.0.1; hosts such as Model Builder call it.</summary>
    public static void CancelExecution(MLContext ml) =>
        typeof(MLContext).GetMethod("CancelExecution", BindingFlags.NonPublic | BindingFlags.Instance)!.Invoke(ml, null);

    /// <summary>Every value of a float column, in row order.</summary>
    public static float[] Floats(IDataView data, string column) => data.GetColumn<float>(column).ToArray();
}
