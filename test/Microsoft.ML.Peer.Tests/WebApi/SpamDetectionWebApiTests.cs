using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.ML.Peer.Tests.MLNet;
using SpamDetection;
using SpamDetection.WebApi;

namespace Microsoft.ML.Peer.Tests.WebApi;

/// <summary>
/// examples/SpamDetection.WebApi in memory (WebApplicationFactory): its answers against a PredictionEngine on the same
/// saved model, its input checks, and the model file replaced under 32 concurrent clients, by a good model and by a broken one.
/// </summary>
[TestClass]
public sealed class SpamDetectionWebApiTests
{
    private const int Clients = 32;
    private static readonly MLContext Ml = new(seed: 1);
    private static string _folder = "";
    private static TrainedModel _first = null!;
    private static TrainedModel _second = null!;
    private static readonly string[] Texts = PluginTestData.Topics(24, seed: 11).Select(r => r.Text!).Append("")
        .Append(string.Concat(Enumerable.Repeat("cheese ", 5000))).ToArray();

    /// <summary>A model trained here and saved, with its answers to <see cref="Texts"/> from a PredictionEngine on the saved
    /// file.</summary>
    private sealed record TrainedModel(ITransformer Model, DataViewSchema Schema, string Path, string[] Labels,
        Dictionary<string, SpamModel.ModelOutput> Expected);

    [ClassInitialize]
    public static void TrainTwoModels(TestContext _)
    {
        _folder = Directory.CreateTempSubdirectory("peer-webapi-").FullName;
        // Two models told apart by their labels, so every answer names the model that gave it.
        _first = Train("first.mlnet", PluginTestData.Topics(160, seed: 1));
        _second = Train("second.mlnet",
            PluginTestData.Topics(160, seed: 2)
                .Select(r => new PluginTestData.LabeledText { Text = r.Text, Label = r.Label == "animals" ? "pets" : "meals" }).ToList());
        CollectionAssert.AreNotEquivalent(_first.Labels, _second.Labels);
    }

    [ClassCleanup]
    public static void DeleteModels()
    {
        (_first?.Model as IDisposable)?.Dispose();
        (_second?.Model as IDisposable)?.Dispose();
        if (_folder.Length > 0) Directory.Delete(_folder, recursive: true);
    }

    private static TrainedModel Train(string name, List<PluginTestData.LabeledText> rows)
    {
        var data = Ml.Data.LoadFromEnumerable(rows);
        var options = PluginTestData.TinyClassifier();
        options.Epochs = 3;
        var model = BuildPipeline(options).Fit(data);
        string path = Path.Combine(_folder, name);
        Ml.Model.SaveAtomically(model, data.Schema, path);
        // The reference answers come from the saved file, as the server reads it, through the consumption classes.
        var reference = new MLContext();
        var loaded = reference.Model.Load(path, out _);
        var engine = reference.Model.CreatePredictionEngine<SpamModel.ModelInput, SpamModel.ModelOutput>(loaded);
        var expected = Texts.Distinct().ToDictionary(t => t, t => engine.Predict(new SpamModel.ModelInput { Text = t }));
        engine.Dispose();  // disposes `loaded` too (ML.NET 5)
        return new TrainedModel(model, data.Schema, path, rows.Select(r => r.Label).Distinct().ToArray(), expected);
    }

    /// <summary>SpamModel.BuildPipeline of the SpamDetection example: label → key, the PEER classifier, key → label.</summary>
    private static IEstimator<ITransformer> BuildPipeline(PeerTextClassificationTrainer.Options options)
    {
        options.LabelColumnName = "Label";
        options.TextColumnName = "Text";
        return Ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(Ml.Peer().TextClassification(options))
            .Append(Ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
    }

    /// <summary>A copy of <paramref name="model"/>'s file, in a folder of its own, for one server to watch.</summary>
    private static string ServedCopy(TrainedModel model)
    {
        string path =
            Path.Combine(Directory.CreateDirectory(Path.Combine(_folder, $"served-{Guid.NewGuid():N}")).FullName, "SpamModel.mlnet");
        File.Copy(model.Path, path);
        return path;
    }

    private static WebApplicationFactory<ModelServer> Serve(string modelPath) =>
        new WebApplicationFactory<ModelServer>().WithWebHostBuilder(host => host
            .UseSetting("ModelPath", modelPath)
            .UseSetting("ModelPollInterval", "00:00:00.050"));

    private static async Task<PredictResponse> PredictAsync(HttpClient client, string text)
    {
        using var response = await client.PostAsJsonAsync("/predict", new { text });
        string body = await response.Content.ReadAsStringAsync();
        Assert.AreEqual(HttpStatusCode.OK, response.StatusCode, body);
        return System.Text.Json.JsonSerializer.Deserialize<PredictResponse>(body, System.Text.Json.JsonSerializerOptions.Web)!;
    }

    /// <summary>Null if <paramref name="answer"/> is exactly what <paramref name="model"/>'s own engine says; otherwise why not.</summary>
    private static string? Mismatch(PredictResponse answer, TrainedModel model, string text)
    {
        var expected = model.Expected[text];
        if (answer.PredictedLabel != expected.PredictedLabel) return $"label {answer.PredictedLabel}, engine {expected.PredictedLabel}";
        if (!answer.Score.SequenceEqual(expected.Score))
            return $"scores [{string.Join(", ", answer.Score)}], engine [{string.Join(", ", expected.Score)}]";
        if (!answer.Labels.OrderBy(l => l).SequenceEqual(model.Labels.OrderBy(l => l)))
            return $"labels [{string.Join(", ", answer.Labels)}]";
        return null;
    }

    private static Task<HealthResponse> HealthAsync(HttpClient client) => client.GetFromJsonAsync<HealthResponse>("/health")!;

    /// <summary>Polls /health until <paramref name="done"/> holds; fails (it does not time the server) only if it never does.</summary>
    private static async Task<HealthResponse> HealthWhenAsync(HttpClient client, Func<HealthResponse, bool> done, string what)
    {
        var deadline = DateTime.UtcNow.AddMinutes(2);
        while (true)
        {
            var health = await HealthAsync(client);
            if (done(health)) return health;
            if (DateTime.UtcNow > deadline) Assert.Fail($"/health never showed {what}; last: {health}");
            await Task.Delay(25);
        }
    }

    [TestMethod]
    public async Task HealthNamesTheServedModel()
    {
        string served = ServedCopy(_first);
        using var app = Serve(served);
        using var client = app.CreateClient();
        var health = await HealthAsync(client);
        Assert.AreEqual("ok", health.Status);
        Assert.AreEqual(served, health.Model.Path);
        Assert.AreEqual(1, health.Model.Version);
        Assert.AreEqual(new FileInfo(served).Length, health.Model.FileLength);
        CollectionAssert.AreEquivalent(_first.Labels, health.Model.Labels.ToArray());
        Assert.AreEqual(0, health.Reloads);
        Assert.IsNull(health.LastReloadError);
    }

    [TestMethod]
    public async Task PredictAnswersWhatAPredictionEngineOnTheSameFileAnswers()
    {
        using var app = Serve(ServedCopy(_first));
        using var client = app.CreateClient();
        foreach (string text in Texts)
        {
            var answer = await PredictAsync(client, text);
            Assert.AreEqual(1, answer.ModelVersion);
            Assert.IsNull(Mismatch(answer, _first, text), $"text '{text[..Math.Min(text.Length, 40)]}'");
        }
    }

    [TestMethod]
    public async Task BadRequestsAreRefusedWithTheReason()
    {
        using var app = Serve(ServedCopy(_first));
        using var client = app.CreateClient();
        async Task<(HttpStatusCode Status, string Body)> Post(string body, string mediaType = "application/json")
        {
            using var response = await client.PostAsync("/predict", new StringContent(body, Encoding.UTF8, mediaType));
            return (response.StatusCode, await response.Content.ReadAsStringAsync());
        }

        foreach (string missing in new[] { "{}", "{\"text\": null}", "null", "{\"subject\": \"hello\"}" })
        {
            var (status, body) = await Post(missing);
            Assert.AreEqual(HttpStatusCode.BadRequest, status, missing);
            StringAssert.Contains(body, "The field 'text' is required", missing);
        }
        foreach (string malformed in new[] { "", "{", "not json", "{\"text\": 5}", "[\"a\"]" })
        {
            var (status, body) = await Post(malformed);
            Assert.AreEqual(HttpStatusCode.BadRequest, status, malformed);
            StringAssert.Contains(body, "string field 'text'", malformed);
        }
        var (plainStatus, plainBody) = await Post("Subject: hello", "text/plain");
        Assert.AreEqual(HttpStatusCode.UnsupportedMediaType, plainStatus);
        StringAssert.Contains(plainBody, "application/json");
        // An empty mail is a valid request: it is scored like a text with no words.
        Assert.IsNull(Mismatch(await PredictAsync(client, ""), _first, ""));
        // A refused request leaves the server serving.
        Assert.AreEqual("ok", (await HealthAsync(client)).Status);
    }

    [TestMethod]
    public async Task ConcurrentClientsAllSucceedWhileTheModelFileIsReplaced()
    {
        string served = ServedCopy(_first);
        using var app = Serve(served);
        using var client = app.CreateClient();
        var problems = new ConcurrentQueue<string>();
        int requests = 0, fromFirst = 0, fromSecond = 0;
        var deadline = DateTime.UtcNow.AddMinutes(2);

        async Task Client(int id)
        {
            // Each client goes on until it has had three answers from the new model: the swap falls inside every client's run.
            for (int i = 0, answersFromSecond = 0; answersFromSecond < 3; i++)
            {
                if (DateTime.UtcNow > deadline) { problems.Enqueue($"client {id}: the new model never answered"); return; }
                string text = Texts[(id * 7 + i) % Texts.Length];
                using var response = await client.PostAsJsonAsync("/predict", new { text });
                string body = await response.Content.ReadAsStringAsync();
                Interlocked.Increment(ref requests);
                if (response.StatusCode != HttpStatusCode.OK)
                {
                    problems.Enqueue($"client {id}: {(int)response.StatusCode} {body}");
                    continue;
                }
                var answer =
                    System.Text.Json.JsonSerializer.Deserialize<PredictResponse>(body, System.Text.Json.JsonSerializerOptions.Web)!;
                var model = answer.ModelVersion switch { 1 => _first, 2 => _second, _ => null };
                string? mismatch = model is null ? $"model version {answer.ModelVersion}" : Mismatch(answer, model, text);
                if (mismatch is not null) problems.Enqueue($"client {id}, version {answer.ModelVersion}: {mismatch}");
                if (answer.ModelVersion == 2) { answersFromSecond++; Interlocked.Increment(ref fromSecond); }
                else Interlocked.Increment(ref fromFirst);
            }
        }

        async Task ReplaceMidRun()
        {
            // Once every client has been answered a few times by the first model, the second is saved over its file.
            while (Volatile.Read(ref fromFirst) < Clients * 4 && DateTime.UtcNow < deadline) await Task.Delay(5);
            await Task.Run(() => Ml.Model.SaveAtomically(_second.Model, _second.Schema, served));
        }

        await Task.WhenAll(Enumerable.Range(0, Clients).Select(id => Task.Run(() => Client(id))).Append(ReplaceMidRun()));

        Assert.IsTrue(problems.IsEmpty,
            $"{problems.Count} of {requests} requests failed or answered wrongly:\n{string.Join('\n', problems.Take(10))}");
        Assert.IsTrue(fromFirst >= Clients * 4 && fromSecond >= Clients * 3,
            $"{fromFirst} answers from the first model, {fromSecond} from the second");
        var health = await HealthWhenAsync(client, h => h.RetiredModelsInUse == 0, "the replaced model released");
        Assert.AreEqual("ok", health.Status);
        Assert.AreEqual(2, health.Model.Version);
        Assert.AreEqual(1, health.Reloads);
        Assert.AreEqual(new FileInfo(served).Length, health.Model.FileLength);
        foreach (string text in Texts) Assert.IsNull(Mismatch(await PredictAsync(client, text), _second, text));
    }

    [TestMethod]
    public async Task ABrokenReplacementKeepsTheOldModelServingAndIsReported()
    {
        string served = ServedCopy(_first);
        using var app = Serve(served);
        using var client = app.CreateClient();

        // Half of a model, renamed into place as a whole file would be: the server sees a complete, broken file.
        string broken = ModelFiles.Truncated(_second.Path, 0.5);
        File.Move(broken, served, overwrite: true);
        var health = await HealthWhenAsync(client, h => h.LastReloadError is not null, "the failed reload");
        Assert.AreEqual("degraded", health.Status);
        Assert.AreEqual(1, health.Model.Version);
        Assert.AreEqual(1, health.FailedReloads);
        Assert.AreEqual(new FileInfo(served).Length, health.LastReloadError!.FileLength);
        Assert.IsFalse(string.IsNullOrWhiteSpace(health.LastReloadError.Message));
        foreach (string text in Texts) Assert.IsNull(Mismatch(await PredictAsync(client, text), _first, text));
        // The broken file is not retried until it changes (ten poll intervals later it still failed once).
        await Task.Delay(500);
        Assert.AreEqual(1, (await HealthAsync(client)).FailedReloads);

        // A good model saved over it is loaded, and clears the error.
        Ml.Model.SaveAtomically(_second.Model, _second.Schema, served);
        health = await HealthWhenAsync(client, h => h.Model.Version == 2, "the good model loaded");
        Assert.AreEqual("ok", health.Status);
        Assert.IsNull(health.LastReloadError);
        Assert.AreEqual(1, health.FailedReloads);
        foreach (string text in Texts) Assert.IsNull(Mismatch(await PredictAsync(client, text), _second, text));
    }

    [TestMethod]
    public void AReplacedModelIsDisposedOnlyAfterItsLastRequest()
    {
        string served = ServedCopy(_first);
        using var server =
            new ModelServer(Options.Create(new ModelServingOptions { ModelPath = served }), NullLogger<ModelServer>.Instance);
        string text = Texts[0];
        // A request that took the first model just before the swap, and has not scored yet.
        var inFlight = server.Rent();
        Ml.Model.SaveAtomically(_second.Model, _second.Schema, served);
        Assert.IsTrue(server.Reload(), server.LastReloadError?.Message);
        Assert.AreEqual(2, server.Current.Version);
        Assert.AreEqual(1, server.RetiredModelsInUse);

        // It still scores on the model it took, exactly as before the swap; new requests get the new model.
        var old = inFlight.Model;
        Assert.AreEqual(1, old.Version);
        var answer = old.Predict(new SpamModel.ModelInput { Text = text });
        Assert.AreEqual(_first.Expected[text].PredictedLabel, answer.PredictedLabel);
        CollectionAssert.AreEqual(_first.Expected[text].Score, answer.Score);
        Assert.AreEqual(_second.Expected[text].PredictedLabel,
            server.Predict(new SpamModel.ModelInput { Text = text }).Output.PredictedLabel);

        // Its end releases the old model: disposed, so it can no longer score.
        inFlight.Dispose();
        inFlight.Dispose();  // a second Dispose gives nothing back twice
        Assert.AreEqual(0, server.RetiredModelsInUse);
        Assert.Throws<ObjectDisposedException>(() => old.Predict(new SpamModel.ModelInput { Text = text }));
        Assert.AreEqual(2, server.Current.Version);
    }

    [TestMethod]
    public void WithoutAModelTheServerDoesNotStart()
    {
        using var app = Serve(Path.Combine(_folder, "no-such-model.mlnet"));
        var e = Assert.Throws<Exception>(() => app.CreateClient());
        Assert.IsTrue(e is FileNotFoundException || e.InnerException is FileNotFoundException, e.ToString());
    }
}
