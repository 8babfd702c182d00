// Consumption code in the shape Model Builder generates: input/output classes and a lazily created prediction engine.
using Microsoft.ML;
using Microsoft.ML.Data;

namespace BrownGenre;

public partial class GenreModel
{
    /// <summary>A passage of a Brown text, the text it comes from and, for training, its genre (e.g. "news").</summary>
    public class ModelInput
    {
        [ColumnName(@"Text")]
        public string Text { get; set; } = "";

        [ColumnName(@"DocumentId")]
        public string DocumentId { get; set; } = "";

        [ColumnName(@"Label")]
        public string Label { get; set; } = "";
    }

    /// <summary>The predicted genre and the probability of each of the 15 genres.</summary>
    public class ModelOutput
    {
        [ColumnName(@"PredictedLabel")]
        public string PredictedLabel { get; set; } = "";

        [ColumnName(@"Score")]
        public float[] Score { get; set; } = [];
    }

    /// <summary>Where the trained model is saved and loaded from.</summary>
    public static string MLNetModelPath { get; set; } = Path.GetFullPath(Path.Combine("artifacts", "BrownGenre", "GenreModel.mlnet"));

    // One thread at a time (Model Builder's pattern); use PredictionEnginePool or an engine per thread otherwise.
    public static readonly Lazy<PredictionEngine<ModelInput, ModelOutput>> PredictEngine = new(() => CreatePredictEngine(), true);

    /// <summary>Predicts the genre of <paramref name="input"/> with the saved model.</summary>
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
