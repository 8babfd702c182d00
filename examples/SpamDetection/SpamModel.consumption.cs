// Consumption code in the shape Model Builder generates: input/output classes and a lazily created prediction engine.
using Microsoft.ML;
using Microsoft.ML.Data;

namespace SpamDetection;

public partial class SpamModel
{
    /// <summary>One mail: its whole text (headers included) and, for training, its label "spam" or "ham".</summary>
    public class ModelInput
    {
        [ColumnName(@"Text")]
        public string Text { get; set; } = "";

        [ColumnName(@"Label")]
        public string Label { get; set; } = "";
    }

    /// <summary>The model's answer: the predicted label and the probability of each class (in <see cref="ClassNames"/> order).</summary>
    public class ModelOutput
    {
        [ColumnName(@"PredictedLabel")]
        public string PredictedLabel { get; set; } = "";

        [ColumnName(@"Score")]
        public float[] Score { get; set; } = [];
    }

    /// <summary>Where the trained model is saved and loaded from.</summary>
    public static string MLNetModelPath { get; set; } = Path.GetFullPath(Path.Combine("artifacts", "SpamDetection", "SpamModel.mlnet"));

    // PredictionEngine is not thread-safe: this one serves one thread at a time (Model Builder's pattern); use
    // PredictionEnginePool or one engine per thread for concurrent requests.
    public static readonly Lazy<PredictionEngine<ModelInput, ModelOutput>> PredictEngine = new(() => CreatePredictEngine(), true);

    /// <summary>Predicts whether <paramref name="input"/> is spam with the saved model.</summary>
    public static ModelOutput Predict(ModelInput input)
    {
        var predEngine = PredictEngine.Value;
        return predEngine.Predict(input);
    }

    private static PredictionEngine<ModelInput, ModelOutput> CreatePredictEngine()
    {
        var mlContext = new MLContext();
        ITransformer mlModel = mlContext.Model.Load(MLNetModelPath, out var _);
        return mlContext.Model.CreatePredictionEngine<ModelInput, ModelOutput>(mlModel);
    }
}
