// The classifier suite: our trainer with its defaults beside ML.NET's stock text classifiers on every labelled text set
// this project reads from package registries, on the same split of each, with micro/macro accuracy, log-loss and fit
// time per trainer (docs/ml-net-plugin.md). Writes artifacts/classifier/<set>.json.
using System.Text.Json;
using ClassifierBenchmarks;
using Microsoft.ML.Peer.Examples;

var arguments = ExampleArguments.Parse(args, "Usage: dotnet run -c Release --project examples/ClassifierBenchmarks -- [options]",
    new Dictionary<string, string>
    {
        ["sets"] = $"comma-separated sets (default all: {string.Join(", ", TextSets.Names)})",
        ["output"] = "folder for the JSON reports (default artifacts/classifier)",
        ["trainers"] = "comma-separated parts of trainer names to run (default all: PEER, Sdca, Lbfgs, LightGbm; with --cv, the stock ones to cross-validate too, default none)",
        ["cv"] = "K: instead of the test split, K-fold cross-validation of PEER configurations on each set's training part only",
        ["few-labels"] = "comma-separated label fractions (e.g. 0.01,0.05,0.2): the few-label experiment instead of the suite",
        ["pretrain-epochs"] = "with --few-labels: epochs of the language model's pre-training (default 1)",
        ["pretrain-minutes"] = "with --few-labels: a time budget for the pre-training, in minutes (default none: the epochs)",
        ["seed"] = "N: the MLContext seed of every fit (default 1): the seed of our trainer and of SDCA's shuffling, and with --cv of the folds",
        ["train-rows"] = "N: at most N rows of each set's training part, evenly spaced (to cross-validate at a smaller size); the test part is kept",
        ["configs"] = "with --cv: '|'-separated PEER configurations, each 'Field=Value,...' of the trainer's Options or 'defaults'; 'none' for only the --trainers; without --cv: more PEER configurations fitted and tested after the --trainers",
    },
    new Dictionary<string, string>
    {
        ["quick"] = "tiny slices of each set (300 training, 100 test rows): checks that every trainer runs, in CI-sized time",
        ["verbose"] = "also print our trainer's log (each epoch's losses, the epoch kept, the score temperature)",
    });
if (arguments is null) return 2;
bool quick = arguments.Flag("quick");
ClassifierSuite.Verbose = arguments.Flag("verbose");
var names = arguments.Text("sets", string.Join(',', TextSets.Names))
    .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
var unknown = names.Except(TextSets.Names).ToList();
if (unknown.Count > 0)
{
    Console.Error.WriteLine($"--sets names unknown sets: {string.Join(", ", unknown)}; the sets are {string.Join(", ", TextSets.Names)}.");
    return 2;
}
var only = arguments.Text("trainers", "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
var unknownTrainers = ClassifierSuite.UnknownTrainers(only);
if (unknownTrainers.Count > 0)
{
    Console.Error.WriteLine($"--trainers names no trainer: {string.Join(", ", unknownTrainers)}; the trainers are " +
                            $"{string.Join(", ", ClassifierSuite.Trainers.Select(t => t.Name))}.");
    return 2;
}
// Every number is read and checked before any set is loaded (a first run downloads them); a bad one is refused by name.
int folds, seed;
int? trainRows;
List<double> fractions;
Microsoft.ML.Peer.PeerLanguageModelTrainer.Options pretraining;
try
{
    folds = arguments.Integer("cv", 0);
    if (arguments.Text("cv", "") != "") ClassifierSuite.CheckFolds(folds);
    trainRows = arguments.Text("train-rows", "") != "" ? TextSet.CheckTrainingRows(arguments.Integer("train-rows", 0)) : null;
    seed = arguments.Integer("seed", 1);
    fractions = arguments.Text("few-labels", "").Split(',', StringSplitOptions.RemoveEmptyEntries)
        .Select(f => double.TryParse(f, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var v)
            ? v
            : throw new FormatException($"--few-labels expects comma-separated numbers; got '{f}'.")).ToList();
    pretraining = new Microsoft.ML.Peer.PeerLanguageModelTrainer.Options
    {
        Epochs = arguments.Integer("pretrain-epochs", 1),
        TimeBudget = arguments.Number("pretrain-minutes", 0) is > 0 and var minutes ? TimeSpan.FromMinutes(minutes) : null,
    };
}
catch (Exception e) when (e is ArgumentOutOfRangeException or FormatException)
{
    Console.Error.WriteLine(e.Message);
    return 2;
}
string output = Path.GetFullPath(arguments.Text("output", Path.Combine("artifacts", "classifier")));
Directory.CreateDirectory(output);
var all = new List<TrainerResult>();
foreach (var name in names)
{
    Console.WriteLine($"Loading {name} ...");
    var set = TextSets.Load(name);
    if (quick) set = set.Slice(300, 100);
    if (trainRows is { } trainingRows) set = set.SliceTraining(trainingRows);
    Console.WriteLine($"  {set.Source}; {set.Labelling}; split {set.Split}: " +
                      $"{set.Train.Count:N0} training and {set.Test.Count:N0} test rows, " +
                      $"{set.Classes} classes");
    if (fractions.Count > 0)
    {
        var few = ClassifierSuite.FewLabels(set, fractions, pretraining, seed, log: Console.WriteLine);
        all.AddRange(few);
        File.WriteAllText(Path.Combine(output, $"few-labels-{name}{(quick ? "-quick" : "")}.json"),
            ClassifierSuite.Json(set, few, quick, seed).ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        continue;
    }
    if (folds > 0)
    {
        var configs = arguments.Text("configs", "defaults");
        var configurations = configs == "none" ? new List<PeerConfiguration>()
            : configs.Split('|', StringSplitOptions.RemoveEmptyEntries).Select(PeerConfiguration.Parse).ToList();
        var cv = ClassifierSuite.CrossValidate(set, configurations, folds, seed, log: Console.WriteLine, stock: only);
        foreach (var difference in ClassifierSuite.FoldDifferences(cv)) Console.WriteLine(ClassifierSuite.Describe(difference));
        all.AddRange(cv);
        File.WriteAllText(Path.Combine(output, $"cv-{name}{(quick ? "-quick" : "")}.json"),
            ClassifierSuite.Json(set, cv, quick, seed).ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        continue;
    }
    var extra = arguments.Text("configs", "").Split('|', StringSplitOptions.RemoveEmptyEntries).Select(PeerConfiguration.Parse).ToList();
    var results = ClassifierSuite.Run(set, seed, log: Console.WriteLine, only: only, configurations: extra);
    foreach (var difference in ClassifierSuite.PairedDifferences(set, results)) Console.WriteLine(ClassifierSuite.Describe(difference));
    all.AddRange(results);
    File.WriteAllText(Path.Combine(output, $"{name}{(quick ? "-quick" : "")}.json"),
        ClassifierSuite.Json(set, results, quick, seed).ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
}
Console.WriteLine();
Console.WriteLine(ClassifierSuite.Table(all));
return 0;
