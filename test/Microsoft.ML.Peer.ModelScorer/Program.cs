// usage: Microsoft.ML.Peer.ModelScorer <model.zip> <texts.json> <scores.txt>
// texts.json: a JSON array of strings (null allowed), scored as column "Text". Writes one line per row: every
// float, float-vector, int and key output column, floats as raw bits (hex), so the caller can compare exactly.
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Peer.ModelScorer;

if (args.Length != 3)
{
    Console.Error.WriteLine("usage: Microsoft.ML.Peer.ModelScorer <model.zip> <texts.json> <scores.txt>");
    return 2;
}

var ml = new MLContext();
var model = ml.Model.Load(args[0], out _);
var texts = JsonSerializer.Deserialize<string?[]>(File.ReadAllText(args[1])) ?? [];
var data = ml.Data.LoadFromEnumerable(texts.Select(t => new TextRow { Text = t }));
File.WriteAllLines(args[2], ScoreFormatter.ScoreLines(model.Transform(data)));
return 0;
