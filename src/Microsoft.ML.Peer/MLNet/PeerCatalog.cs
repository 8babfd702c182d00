using Microsoft.ML.Peer;
using Microsoft.ML.Runtime;

namespace Microsoft.ML
{
    /// <summary>Entry point of the PEER components: <c>mlContext.Peer()</c>.</summary>
    public static class PeerCatalogExtensions
    {
        /// <summary>The PEER trainers of this ML.NET context.</summary>
        public static PeerCatalog Peer(this MLContext mlContext)
        {
            ArgumentNullException.ThrowIfNull(mlContext);
            return new PeerCatalog(mlContext);
        }
    }
}

namespace Microsoft.ML.Peer
{
    /// <summary>
    /// Trainers whose models replace a transformer's feed-forward block with PEER, a pool of up to a million
    /// single-neuron experts retrieved through product keys (arXiv 2407.04153).
    /// </summary>
    public sealed partial class PeerCatalog
    {
        private readonly IHostEnvironment _env;

        internal PeerCatalog(IHostEnvironment env)
        {
            MLNetVersionCheck.EnsureCompatible();
            Native.TorchSharpRuntime.EnsureLoadable();
            _env = env;
        }

        /// <summary>
        /// A text classifier: a transformer encoder over the text's tokens with a PEER feed-forward, writing
        /// <paramref name="predictedLabelColumnName"/> (a key of the label's type) and <paramref name="scoreColumnName"/>
        /// (one probability per class), so <c>MulticlassClassification.Evaluate</c> works unchanged.
        /// </summary>
        /// <param name="labelColumnName">The label: a key column (use MapValueToKey). Two classes make a binary classifier.</param>
        /// <param name="textColumnName">The text to classify (String).</param>
        /// <param name="scoreColumnName">The class probabilities written (vector of float).</param>
        /// <param name="predictedLabelColumnName">The predicted class written (key).</param>
        /// <param name="validationSet">Optional data scored after each epoch; accuracy and loss go to the log.</param>
        public PeerTextClassificationTrainer TextClassification(
            string labelColumnName = "Label",
            string textColumnName = "Text",
            string scoreColumnName = "Score",
            string predictedLabelColumnName = "PredictedLabel",
            IDataView? validationSet = null) =>
            TextClassification(new PeerTextClassificationTrainer.Options
            {
                LabelColumnName = labelColumnName,
                TextColumnName = textColumnName,
                ScoreColumnName = scoreColumnName,
                PredictedLabelColumnName = predictedLabelColumnName,
                ValidationSet = validationSet,
            });

        /// <summary>A text classifier with every option set (see <see cref="PeerTextClassificationTrainer.Options"/>).</summary>
        public PeerTextClassificationTrainer TextClassification(PeerTextClassificationTrainer.Options options) =>
            new(_env, options);

        /// <summary>
        /// A decoder-only language model trained on the documents of <paramref name="textColumnName"/>; its transformer
        /// adds <c>Perplexity</c> (float) and <c>TokenCount</c> (int) and generates text.
        /// </summary>
        public PeerLanguageModelTrainer LanguageModel(string textColumnName = "Text") =>
            LanguageModel(new PeerLanguageModelTrainer.Options { TextColumnName = textColumnName });

        /// <summary>A language model with every option set (see <see cref="PeerLanguageModelTrainer.Options"/>).</summary>
        public PeerLanguageModelTrainer LanguageModel(PeerLanguageModelTrainer.Options options) =>
            new(_env, options);
    }
}
