using System.Reflection;
using System.Text;
using Microsoft.ML.Data;

namespace Microsoft.ML.Peer.Tests.MLNet;

/// <summary>
/// The mutation fuzzer of issue 10, point 7: a few hundred damaged copies of a saved model, each loaded (and, when it
/// loads, scored) in this process. PEER_FUZZ_CASES and PEER_FUZZ_SEED run a longer session (docs/ml-net-plugin.md).
/// </summary>
[TestClass]
public sealed class SavedModelFuzzTests
{
    public TestContext TestContext { get; set; } = null!;

    private static int Setting(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), out int value) && value > 0 ? value : fallback;

    [TestMethod]
    public void MutatedModelsFailCleanlyWithBoundedMemory()
    {
        int cases = Setting("PEER_FUZZ_CASES", 320), seed = Setting("PEER_FUZZ_SEED", 10);
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromEnumerable(PluginTestData.Topics(64, seed: 3, classes: 3));
        var options = PluginTestData.TinyClassifier();
        options.Epochs = 1;
        options.ModelDimension = 64;
        options.Experts = 64 * 64;         // 2 MB of expert tables: a load whose memory is measurable
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.Peer().TextClassification(options))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel")).Fit(train);
        var saved = new MemoryStream();
        ml.Model.Save(model, train.Schema, saved);
        byte[] original = saved.ToArray();
        var texts = ml.Data.LoadFromEnumerable(PluginTestData.Topics(4, seed: 5, classes: 3));

        // The original's cost: the largest peak growth of a few loads, after one to warm the process up.
        long Load(byte[] zip, out ITransformer? loaded, out Exception? error)
        {
            loaded = null;
            error = null;
            // Memory that earlier tests freed but the process kept would otherwise absorb a load without raising the peak.
            PeakResidentMemory.ReleaseFreedMemory();
            long before = PeakResidentMemory.ResetAndRead();
            try { loaded = new MLContext().Model.Load(new MemoryStream(zip), out _); }
            catch (Exception e) { error = e; }
            return PeakResidentMemory.Peak() - before;
        }
        Load(original, out var warm, out _);
        (warm as IDisposable)?.Dispose();
        long baseline = 0;
        for (int i = 0; i < 3; i++)
        {
            baseline = Math.Max(baseline, Load(original, out var again, out var error));
            Assert.IsNull(error, error?.ToString());
            (again as IDisposable)?.Dispose();
        }

        var mutator = new SavedModelMutator(original, seed);
        var outcomes = new Dictionary<string, int>();
        var failures = new List<string>();
        long worst = 0;
        string worstCase = "";
        for (int c = 0; c < cases; c++)
        {
            var mutated = mutator.Next();
            long grown = Load(mutated.Zip, out var loaded, out var error);
            string outcome;
            if (loaded is not null)
            {
                outcome = "loaded";
                if (mutated.MustFail) failures.Add($"case {c} loaded although its checksums are stale: {mutated.Description}");
                try
                {
                    var scores = loaded.Transform(texts).GetColumn<float[]>("Score").ToArray();
                    if (scores.Any(s => s.Any(v => !float.IsFinite(v))))
                        failures.Add($"case {c} loaded and scored NaN: {mutated.Description}");
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    failures.Add($"case {c} loaded but scoring threw {e.GetType().Name}: {e.Message} ({mutated.Description})");
                }
                (loaded as IDisposable)?.Dispose();
            }
            else
            {
                var inner = Unwrap(error!);
                bool named = inner is InvalidDataException && NamesAStream(inner.Message);
                // Only ML.NET's own parts (the zip, its model header, the chain) fail before the PEER loader runs; once it
                // runs, every failure must be its InvalidDataException naming the stream.
                bool ours = (inner.StackTrace ?? "").Split('\n')
                    .Any(f => f.Contains("at Microsoft.ML.Peer.", StringComparison.Ordinal) &&
                        !f.Contains("at Microsoft.ML.Peer.Tests.", StringComparison.Ordinal));
                outcome = named ? "refused, stream named" : $"refused by ML.NET: {inner.GetType().Name}";
                if (!named && (ours || !MayFailInMLNet(mutated.Kind)))
                    failures.Add($"case {c} ({mutated.Description}): {inner.GetType().Name}: {inner.Message}");
                if (inner is OutOfMemoryException or NullReferenceException or AccessViolationException or IndexOutOfRangeException
                    or StackOverflowException)
                    failures.Add($"case {c} ({mutated.Description}): {inner.GetType().Name}: {inner.Message}");
            }
            outcomes[$"{mutated.Kind} → {outcome}"] = outcomes.GetValueOrDefault($"{mutated.Kind} → {outcome}") + 1;
            // Another test's garbage or a GC heap resize can only raise a measurement, never lower it: a case over the bound
            // is measured twice more and keeps its smallest peak.
            for (int retry = 0; retry < 2 && grown > 2 * baseline; retry++)
            {
                grown = Math.Min(grown, Load(mutated.Zip, out var again, out _));
                (again as IDisposable)?.Dispose();
            }
            if (grown > worst) (worst, worstCase) = (grown, $"{mutated.Kind}: {mutated.Description}");
            if (grown > 2 * baseline)
                failures.Add($"case {c} ({mutated.Description}) raised the peak RSS by {grown >> 20} MB, more than twice the original's {baseline >> 20} MB");
        }

        var report =
            new StringBuilder($"{cases} mutated models (seed {seed}); loading the original raises the peak RSS by {baseline / 1e6:F1} MB; ")
            .AppendLine($"the worst mutation by {worst / 1e6:F1} MB ({worstCase})");
        foreach (var (outcome, count) in outcomes.OrderBy(o => o.Key)) report.AppendLine($"  {count,4}  {outcome}");
        TestContext.WriteLine(report.ToString());
        Console.WriteLine(report.ToString());
        foreach (var failure in failures.Take(20)) Console.WriteLine("fuzz failure: " + failure);
        Assert.AreEqual(0, failures.Count, string.Join(Environment.NewLine, failures.Take(20)) + Environment.NewLine + report);
    }

    /// <summary>Damage to the zip or to ML.NET's model header (in the transformer's Model.key) reaches ML.NET's parsers first.</summary>
    private static bool MayFailInMLNet(string kind) => kind is "zip-flip" or "zip-truncate" or "header";

    /// <summary>The loader's own exception: ML.NET wraps it in TargetInvocationException, and in "Error during class
    /// instantiation".</summary>
    private static Exception Unwrap(Exception e)
    {
        while (e.InnerException is { } inner &&
            (e is TargetInvocationException || (e is InvalidOperationException && e.Message == "Error during class instantiation")))
            e = inner;
        return e;
    }

    private static bool NamesAStream(string message) =>
        new[] { "PeerOptions.json", "PeerTokenizer.bin", "PeerWeights.bin", "PeerChecksums.json", "Model.key",
            "model format version" }.Any(message.Contains);
}
