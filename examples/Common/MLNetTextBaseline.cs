using System.Diagnostics;
using Microsoft.ML;

namespace Microsoft.ML.Peer.Examples;

/// <summary>
/// ML.NET's own text classifier, FeaturizeText (word and character n-grams) + SdcaMaximumEntropy, fitted and evaluated
/// on the same split in the same process, so the examples can print the PEER model beside it.
/// </summary>
public static class MLNetTextBaseline
{
    /// <summary>Fits the baseline on <paramref name="train"/> and evaluates it on <paramref name="test"/>.</summary>
    public static BaselineResult Run(MLContext mlContext, IDataView train, IDataView test, string labelColumnName = "Label",
        string textColumnName = "Text")
    {
        var pipeline = mlContext.Transforms.Conversion.MapValueToKey(labelColumnName)
            .Append(mlContext.Transforms.Text.FeaturizeText("Features", textColumnName))
            .Append(mlContext.MulticlassClassification.Trainers.SdcaMaximumEntropy(labelColumnName, "Features"))
            .Append(mlContext.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
        var clock = Stopwatch.StartNew();
        var model = pipeline.Fit(train);
        var fitTime = clock.Elapsed;
        var metrics = mlContext.MulticlassClassification.Evaluate(model.Transform(test), labelColumnName);
        return new BaselineResult(metrics.MicroAccuracy, metrics.MacroAccuracy, metrics.LogLoss, fitTime);
    }
}

/// <summary>Accuracy and fit time of <see cref="MLNetTextBaseline"/>.</summary>
public sealed record BaselineResult(double MicroAccuracy, double MacroAccuracy, double LogLoss, TimeSpan FitTime);
