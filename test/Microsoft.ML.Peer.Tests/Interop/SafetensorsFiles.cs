using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.ML.Peer.Layers;
using Microsoft.ML.Peer.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Tests.Interop;

/// <summary>Helpers of the safetensors tests: models with every weight and statistic set at random, and edited copies of a file.</summary>
internal static class SafetensorsFiles
{
    public static string TemporaryPath(string name) => Path.Combine(Path.GetTempPath(), $"peer-{name}-{Guid.NewGuid():N}.safetensors");

    /// <summary>
    /// Sets every parameter and statistic of <paramref name="model"/> at random (seeded), at scales that make logits of
    /// order one and retrieval depend on the input: a comparison at 1e-5 then means something, and no tensor is left at a
    /// default (ones, zeros, identity) that a broken export or import could reproduce by accident.
    /// </summary>
    public static void Randomize(nn.Module model, long seed)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var generator = new Generator((ulong)seed);
        foreach (var (name, tensor) in model.state_dict())
        {
            if (!tensor.is_floating_point())
            {
                tensor.fill_(7);   // num_batches_tracked
                continue;
            }
            var noise = randn(tensor.shape, generator: generator);
            if (name.EndsWith("running_var", StringComparison.Ordinal)) tensor.copy_(noise.abs() * 0.5 + 0.5);
            else if (name.EndsWith("running_covariance", StringComparison.Ordinal))
            {
                var a = randn(tensor.shape, generator: generator) * 0.5;
                tensor.copy_(matmul(a, a.transpose(1, 2)) + eye(tensor.shape[1]));
            }
            else if (name.EndsWith("norm.weight", StringComparison.Ordinal) || name.EndsWith("whitening.weight", StringComparison.Ordinal))
                tensor.copy_(noise * 0.2 + 1);
            else if (tensor.dim() >= 2 && !name.Contains("embedding", StringComparison.Ordinal))
                tensor.copy_(noise / Math.Sqrt(tensor.shape[^1]));
            else tensor.copy_(noise * 0.5);
        }
    }

    /// <summary>Tiny language model options with <paramref name="kind"/> in block 1 (of 2).</summary>
    public static LanguageModelOptions LanguageModel(FeedForwardKind kind, Action<PeerOptions>? peer = null)
    {
        var options = Training.TinyLanguageModels.Options(kind);
        peer?.Invoke(options.Peer);
        return options;
    }

    /// <summary>Token ids [batch, context] of the tiny vocabulary, seeded.</summary>
    public static long[,] Tokens(int batch, int time, int vocabulary, int seed, int padding = -1)
    {
        var random = new Random(seed);
        var tokens = new long[batch, time];
        for (int b = 0; b < batch; b++)
        {
            // With padding, each row is padded after a random length of real tokens (row 0 is all padding but its first).
            int length = padding < 0 ? time : b == 0 ? 1 : random.Next(2, time + 1);
            for (int t = 0; t < time; t++)
            {
                int id;
                do id = random.Next(vocabulary); while (id == padding);
                tokens[b, t] = t < length ? id : padding;
            }
        }
        return tokens;
    }

    /// <summary>The header of a safetensors file, as JSON, and its data section.</summary>
    public static (JsonObject Header, byte[] Data) Split(string path)
    {
        var bytes = File.ReadAllBytes(path);
        long length = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        var header = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, (int)length))!.AsObject();
        return (header, bytes[(8 + (int)length)..]);
    }

    /// <summary>A safetensors file of <paramref name="header"/> and <paramref name="data"/>.</summary>
    public static void Join(string path, JsonObject header, byte[] data)
    {
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        var bytes = new byte[8 + json.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)json.Length);
        json.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + json.Length);
        File.WriteAllBytes(path, bytes);
    }

    /// <summary>A copy of <paramref name="source"/> with its header and data edited.</summary>
    public static string Edited(string source, Action<JsonObject> header, Func<byte[], byte[]>? data = null)
    {
        var (json, bytes) = Split(source);
        header(json);
        string path = TemporaryPath("edited");
        Join(path, json, data?.Invoke(bytes) ?? bytes);
        return path;
    }

    /// <summary>The model's options in an export's metadata, as editable JSON.</summary>
    public static JsonObject Config(JsonObject header) => JsonNode.Parse((string)header["__metadata__"]!["peer.config"]!)!.AsObject();

    public static void SetConfig(JsonObject header, JsonObject config) => header["__metadata__"]!["peer.config"] = config.ToJsonString();
}
