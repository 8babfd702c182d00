// A user's program, built by PackageConsumerTests in a project of its own outside the repository (and never compiled
// into the tests): fits a small PEER text classifier through the public API, evaluates it, saves it, and prints its
// scores bit for bit; "score" reloads the saved model in a new process and prints the same lines; "check-backend"
// reports (exit 3) what ml.Peer() says when the application lacks a libtorch backend package.
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peer;
using Microsoft.ML.Peer.Native;

if (args.Length != 2 || args[0] is not ("fit" or "score" or "check-backend"))
{
    Console.Error.WriteLine("usage: Consumer fit|score|check-backend <model.zip>");
    return 2;
}

var ml = new MLContext(seed: 1);
if (args[0] == "check-backend")
{
    try
    {
        ml.Peer();
        Console.WriteLine("backend present");
        return 0;
    }
    catch (InvalidOperationException e)
    {
        Console.WriteLine($"refused: {e.Message}");
        return 3;
    }
}
var data = ml.Data.LoadFromEnumerable(Topics(240, seed: 5));
ITransformer model;
if (args[0] == "fit")
{
    var split = ml.Data.TrainTestSplit(data, testFraction: 0.25, seed: 7);
    var pipeline = ml.Transforms.Conversion.MapValueToKey("Label")
        .Append(ml.Peer().TextClassification(new PeerTextClassificationTrainer.Options
        {
            LabelColumnName = "Label",
            TextColumnName = "Text",
            VocabularySize = 300,
            ModelDimension = 32,
            Experts = 16 * 16,
            Heads = 2,
            TopK = 4,
            KeyDimension = 16,
            MaxSequenceLength = 32,
            BatchSize = 16,
            Epochs = 4,
        }))
        .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
    model = pipeline.Fit(split.TrainSet);
    var metrics = ml.MulticlassClassification.Evaluate(model.Transform(split.TestSet));
    Console.WriteLine($"micro-accuracy {metrics.MicroAccuracy:F4}");
    ml.Model.SaveAtomically(model, data.Schema, args[1]);
}
else
{
    model = ml.Model.Load(args[1], out _);
}

Console.WriteLine($"native kernels {PeerNativeLibrary.IsAvailable}");
foreach (var row in model.Transform(ml.Data.TakeRows(data, 20)).GetColumn<float[]>("Score"))
    Console.WriteLine("score " + string.Join(' ', row.Select(s => BitConverter.SingleToInt32Bits(s).ToString("x8"))));
return 0;

static List<Mail> Topics(int count, int seed)
{
    string[][] words = { new[] { "cat", "dog", "horse", "bird" }, new[] { "bread", "cheese", "apple", "soup" } };
    string[] labels = { "animals", "food" };
    string[] filler = { "today", "we", "talked", "about", "the", "and", "a", "very" };
    var random = new Random(seed);
    var rows = new List<Mail>();
    for (int i = 0; i < count; i++)
    {
        int label = random.Next(2);
        rows.Add(new Mail
        {
            Label = labels[label],
            Text = string.Join(' ',
                Enumerable.Range(0, 8).Select(j => j % 2 == 0 ? words[label][random.Next(4)] : filler[random.Next(filler.Length)])),
        });
    }
    return rows;
}

internal sealed class Mail
{
    public string Text { get; set; } = "";
    public string Label { get; set; } = "";
}
