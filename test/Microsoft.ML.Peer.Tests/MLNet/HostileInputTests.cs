using System.Reflection;
using Microsoft.ML.Data;

namespace Microsoft.ML.Peer.Tests.MLNet;

/// <summary>What a hostile file, a hostile text or careless lifetime handling must not do (issue 10, F1–F8).</summary>
[TestClass]
public sealed class HostileInputTests
{
    private static readonly MLContext Ml = new(seed: 1);

    /// <summary>The recommended shape (a bag of embeddings into one PEER layer), small: PEER's query BN sees one row per text.</summary>
    private static PeerTextClassificationTrainer.Options BagOfEmbeddings()
    {
        var options = PluginTestData.TinyClassifier();
        options.Layers = 0;
        options.Epochs = 3;
        return options;
    }

    private static float[][] Scores(ITransformer model, IDataView data) => model.Transform(data).GetColumn<float[]>("Score").ToArray();

    [TestMethod]
    public void F8_ABatchOfOneTextDoesNotPoisonTheModel()
    {
        // 17 texts in batches of 16: every epoch ends with a batch of one text, whose query batch norm has one row. Its
        // unbiased running variance was 0/0: every later score NaN, every prediction the first class, no error.
        var train = Ml.Data.LoadFromEnumerable(PluginTestData.Topics(17, seed: 3, classes: 2));
        var model = Ml.Transforms.Conversion.MapValueToKey("Label").Append(Ml.Peer().TextClassification(BagOfEmbeddings())).Fit(train);
        var scores = Scores(model, Ml.Data.LoadFromEnumerable(PluginTestData.Topics(20, seed: 4, classes: 2)));
        Assert.IsTrue(scores.All(row => row.All(float.IsFinite)), "scores must be finite: " + string.Join(" ", scores[0]));
    }

    private static PeerTextClassificationTransformer TrainSmall(out ITransformer pipeline)
    {
        var train = Ml.Data.LoadFromEnumerable(PluginTestData.Topics(64, seed: 3, classes: 2));
        pipeline = Ml.Transforms.Conversion.MapValueToKey("Label").Append(Ml.Peer().TextClassification(BagOfEmbeddings())).Fit(train);
        return ((IEnumerable<ITransformer>)pipeline).OfType<PeerTextClassificationTransformer>().Single();
    }

    [TestMethod]
    public void F3_SavingADisposedModelThrowsAndKeepsTheOldFile()
    {
        var classifier = TrainSmall(out var pipeline);
        string path = ModelFiles.TemporaryPath("disposed-save");
        try
        {
            Ml.Model.Save(pipeline, null, path);
            long before = new FileInfo(path).Length;
            classifier.Dispose();
            Assert.Throws<ObjectDisposedException>(() => Ml.Model.SaveAtomically(pipeline, null, path));
            Assert.AreEqual(before, new FileInfo(path).Length, "the good model file must be left as it was");
            Assert.Throws<ObjectDisposedException>(() => classifier.PredictProbabilities("cat dog"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void F2_DisposeWhileThreadsScoreNeverReachesNativeCode()
    {
        for (int run = 0; run < 3; run++)
        {
            var classifier = TrainSmall(out _);
            using var start = new Barrier(5);
            var workers = Enumerable.Range(0, 4).Select(_ => Task.Run(() =>
            {
                start.SignalAndWait();
                try
                {
                    for (int i = 0; i < 2000; i++) Assert.AreEqual(2, classifier.PredictProbabilities("cat bread today").Length);
                }
                catch (ObjectDisposedException)
                {
                    // the documented outcome once Dispose has begun
                }
            })).ToArray();
            start.SignalAndWait();
            Thread.Sleep(20);
            classifier.Dispose();
            Task.WaitAll(workers);
        }
    }

    [TestMethod]
    public void F5_AHugeTextWithoutSpacesCostsBoundedWork()
    {
        var classifier = TrainSmall(out _);
        string hostile = new string('a', 10_000_000);
        Microsoft.ML.Peer.Data.CompactTokenizer.CharactersEncoded = 0;
        Assert.AreEqual(2, classifier.PredictProbabilities(hostile).Length);
        long bound = (long)Microsoft.ML.Peer.Data.TruncatedEncoding.CharactersPerToken * classifier.ModelOptions.InputLength;
        Assert.IsTrue(Microsoft.ML.Peer.Data.CompactTokenizer.CharactersEncoded <= bound,
            $"{Microsoft.ML.Peer.Data.CompactTokenizer.CharactersEncoded} characters encoded; the bound is {bound}");

        // The tokenizer itself is linear on such runs and stays lossless.
        string run = new string('b', 100_000);
        Assert.AreEqual(run, classifier.Tokenizer.Decode(classifier.Tokenizer.Encode(run)));
    }

    [TestMethod]
    public void F4_AFailedSaveLeavesTheOldModelIntact()
    {
        TrainSmall(out var pipeline);
        string path = ModelFiles.TemporaryPath("full-disk");
        try
        {
            Ml.Model.Save(pipeline, null, path);
            byte[] before = File.ReadAllBytes(path);
            // A disk that fills after 4 KB of the new file.
            var e = Assert.Throws<IOException>(() => PeerModelOperationsExtensions.SaveAtomically(Ml.Model, pipeline, null, path,
                p => new FullDiskStream(p, 4096)));
            StringAssert.Contains(e.Message, "No space left");
            CollectionAssert.AreEqual(before, File.ReadAllBytes(path), "the old model must survive a failed save");
            Assert.AreEqual(0, Directory.GetFiles(Path.GetDirectoryName(path)!, $".{Path.GetFileName(path)}.*.tmp").Length,
                "no temporary file left");
            new MLContext().Model.Load(path, out _);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private sealed class FullDiskStream(string path, long capacity) : FileStream(path, FileMode.CreateNew)
    {
        public override void Write(byte[] buffer, int offset, int count)
        {
            if (Position + count > capacity) throw new IOException("No space left on device");
            base.Write(buffer, offset, count);
        }

        // FileStream routes span writes through Write(byte[]) once a subclass overrides it; copy so no route recurses.
        public override void Write(ReadOnlySpan<byte> buffer) => Write(buffer.ToArray(), 0, buffer.Length);
    }
}
