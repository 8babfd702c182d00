// Consumption code in the shape Model Builder generates: input/output classes, a lazily loaded model, and Predict
// (here: the perplexity of a text) plus Generate.
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Peer;

namespace BrownLanguageModel;

public partial class LanguageModel
{
    /// <summary>A document (or any text) to score or train on.</summary>
    public class ModelInput
    {
        [ColumnName(@"Text")]
        public string Text { get; set; } = "";
    }

    /// <summary>How surprising the model finds the text, and how many tokens it scored.</summary>
    public class ModelOutput
    {
        [ColumnName(@"Perplexity")]
        public float Perplexity { get; set; }

        [ColumnName(@"TokenCount")]
        public int TokenCount { get; set; }
    }

    /// <summary>Where the trained model is saved and loaded from.</summary>
    public static string MLNetModelPath { get; set; } =
        Path.GetFullPath(Path.Combine("artifacts", "BrownLanguageModel", "LanguageModel.mlnet"));

    private static readonly Lazy<PeerLanguageModelTransformer> Model = new(() =>
        (PeerLanguageModelTransformer)new MLContext().Model.Load(MLNetModelPath, out _), true);

    // One thread at a time (Model Builder's pattern); the transformer itself may be shared by several engines.
    public static readonly Lazy<PredictionEngine<ModelInput, ModelOutput>> PredictEngine =
        new(() => new MLContext().Model.CreatePredictionEngine<ModelInput, ModelOutput>(Model.Value), true);

    /// <summary>The perplexity of <paramref name="input"/>'s text under the saved model.</summary>
    public static ModelOutput Predict(ModelInput input) => PredictEngine.Value.Predict(input);

    /// <summary>Continues <paramref name="prompt"/> with the saved model; the same seed gives the same text.</summary>
    public static string Generate(string prompt, int maxNewTokens = 40, float temperature = 0.8f, int seed = 3) =>
        Model.Value.Generate(prompt, maxNewTokens, temperature, seed);
}
