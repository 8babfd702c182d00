// The SpamDetection model served over HTTP. POST /predict {"text": "..."} scores one mail with a pooled prediction
// engine; GET /health says which model serves and whether the last reload failed. The model is loaded once at start
// and reloaded, without failing a request, when its file is replaced (mlContext.Model.SaveAtomically, or any rename).
//   dotnet run -c Release --project examples/SpamDetection.WebApi -- --ModelPath artifacts/SpamDetection/SpamModel.mlnet
using System.Text.Json;
using Microsoft.Extensions.Configuration.Json;
using SpamDetection;
using SpamDetection.WebApi;

var builder = WebApplication.CreateBuilder(args);
// `dotnet run --project` from the repository root starts there (ModelPath is relative to it), not in this project's
// folder: then the appsettings.json copied beside the program is read, below environment variables and arguments.
if (!File.Exists(Path.Combine(builder.Environment.ContentRootPath, "appsettings.json")))
{
    var defaults = new JsonConfigurationSource { Path = Path.Combine(AppContext.BaseDirectory, "appsettings.json"), Optional = true };
    defaults.ResolveFileProvider();
    builder.Configuration.Sources.Insert(0, defaults);
}
builder.Services.Configure<ModelServingOptions>(builder.Configuration);
builder.Services.AddSingleton<ModelServer>();
builder.Services.AddHostedService<ModelFileWatcher>();
builder.Services.AddProblemDetails();

var app = builder.Build();
// Load now, so that a missing or broken model stops the start with its error instead of failing the first request.
var server = app.Services.GetRequiredService<ModelServer>();

app.MapPost("/predict", async (HttpRequest request, ModelServer models) =>
{
    if (!request.HasJsonContentType())
        return Results.Problem(statusCode: StatusCodes.Status415UnsupportedMediaType, title: "Send the mail as JSON",
            detail: "Content-Type must be application/json, with a body such as {\"text\": \"Subject: ...\"}.");
    PredictRequest? body;
    try
    {
        body = await request.ReadFromJsonAsync<PredictRequest>(request.HttpContext.RequestAborted);
    }
    catch (JsonException e)
    {
        return Results.Problem(statusCode: StatusCodes.Status400BadRequest,
            title: "The body is not a JSON object with a string field 'text'", detail: e.Message);
    }
    if (body?.Text is null)
        return Results.ValidationProblem(new Dictionary<string, string[]>
        {
            ["text"] = ["The field 'text' is required: the mail's whole text (headers included) as a JSON string."],
        });
    // Long texts need no check here: the classifier cuts every text to a bounded number of characters before it tokenizes.
    var (output, model) = models.Predict(new SpamModel.ModelInput { Text = body.Text });
    return Results.Ok(new PredictResponse(output.PredictedLabel, output.Score, model.Labels, model.Version));
})
// No Accepts<> metadata: routing would answer a wrong Content-Type with a bare 415, without the message above.
.Produces<PredictResponse>()
.ProducesValidationProblem();

app.MapGet("/health", (ModelServer models) =>
{
    var current = models.Current;
    var error = models.LastReloadError;
    return Results.Ok(new HealthResponse(
        // Degraded: still serving, but the file on disk is not the model being served (its last reload failed).
        Status: error is null ? "ok" : "degraded",
        Model: new ServedModelInfo(models.ModelPath, current.Version, current.LoadedAtUtc, current.File.LastWriteUtc, current.File.Length,
            current.Labels),
        Reloads: models.Reloads,
        FailedReloads: models.FailedReloads,
        RetiredModelsInUse: models.RetiredModelsInUse,
        LastReloadError: error is null
            ? null
            : new ReloadErrorInfo(error.AtUtc, error.File.LastWriteUtc, error.File.Length, error.Message)));
});

app.Logger.LogInformation("Model version {Version} from {Path}", server.Current.Version, server.ModelPath);
app.Run();

/// <summary>The body of POST /predict.</summary>
public sealed record PredictRequest(string? Text);

/// <summary>The answer of POST /predict: the predicted label, the probability of each class, and the model that answered.</summary>
public sealed record PredictResponse(string PredictedLabel, float[] Score, IReadOnlyList<string> Labels, int ModelVersion);

public sealed record ServedModelInfo(string Path, int Version, DateTime LoadedAtUtc, DateTime FileLastWriteUtc, long FileLength,
    IReadOnlyList<string> Labels);

public sealed record ReloadErrorInfo(DateTime AtUtc, DateTime FileLastWriteUtc, long FileLength, string Message);

public sealed record HealthResponse(string Status, ServedModelInfo Model, int Reloads, int FailedReloads, int RetiredModelsInUse,
    ReloadErrorInfo? LastReloadError);
