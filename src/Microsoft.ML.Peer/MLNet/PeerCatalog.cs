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
    public sealed class PeerCatalog
    {
        private readonly IHostEnvironment _env;

        internal PeerCatalog(IHostEnvironment env) => _env = env;

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
