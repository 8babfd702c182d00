using System.Diagnostics;
using System.IO.Compression;
using System.Text;
using System.Text.Json;
using Microsoft.ML.Peer.ModelScorer;

namespace Microsoft.ML.Peer.Tests.MLNet;

/// <summary>Saved-model helpers: scoring in a separate process, and damaged or re-versioned copies of a model zip.</summary>
internal static class ModelFiles
{
    public static string TemporaryPath(string name) => Path.Combine(Path.GetTempPath(), $"peer-{name}-{Guid.NewGuid():N}.zip");

    /// <summary>Scores <paramref name="texts"/> with the model at <paramref name="modelPath"/> in a new process
    /// (Microsoft.ML.Peer.ModelScorer).</summary>
    public static string[] ScoreInNewProcess(string modelPath, IReadOnlyList<string?> texts)
    {
        string input = Path.GetTempFileName(), output = Path.GetTempFileName();
        try
        {
            File.WriteAllText(input, JsonSerializer.Serialize(texts));
            string tool = Path.Combine(AppContext.BaseDirectory, "Microsoft.ML.Peer.ModelScorer.dll");
            var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
            {
                RedirectStandardError = true,
                RedirectStandardOutput = true,
            };
            foreach (var a in new[] { "exec", tool, modelPath, input, output }) start.ArgumentList.Add(a);
            using var process = Process.Start(start)!;
            string stderr = process.StandardError.ReadToEnd();
            process.StandardOutput.ReadToEnd();
            if (!process.WaitForExit(120_000)) { process.Kill(true); Assert.Fail("the scoring process did not finish in 120 s"); }
            Assert.AreEqual(0, process.ExitCode, $"scoring process failed: {stderr}");
            return File.ReadAllLines(output);
        }
        finally
        {
            File.Delete(input);
            File.Delete(output);
        }
    }

    /// <summary>The same lines, computed in this process.</summary>
    public static string[] ScoreHere(ITransformer model, MLContext ml, IReadOnlyList<string?> texts) =>
        ScoreFormatter.ScoreLines(model.Transform(ml.Data.LoadFromEnumerable(texts.Select(t => new TextRow { Text = t })))).ToArray();

    /// <summary>
    /// Rewrites the format version stored after <paramref name="modelSignature"/> in the model's header (the 8-byte
    /// signature is followed by the written and the readable version, uint32 each), as a newer release would write it.
    /// </summary>
    public static void SetFormatVersion(string zipPath, string modelSignature, uint written, uint readable)
    {
        byte[] signature = Encoding.ASCII.GetBytes(modelSignature);
        using var zip = ZipFile.Open(zipPath, ZipArchiveMode.Update);
        foreach (var entry in zip.Entries.ToList())
        {
            byte[] bytes;
            using (var s = entry.Open()) { var m = new MemoryStream(); s.CopyTo(m); bytes = m.ToArray(); }
            int at = bytes.AsSpan().IndexOf(signature);
            if (at < 0) continue;
            BitConverter.TryWriteBytes(bytes.AsSpan(at + 8, 4), written);
            BitConverter.TryWriteBytes(bytes.AsSpan(at + 12, 4), readable);
            string name = entry.FullName;
            entry.Delete();
            using var w = zip.CreateEntry(name).Open();
            w.Write(bytes);
            return;
        }
        Assert.Fail($"signature {modelSignature} not found in {zipPath}");
    }

    /// <summary>A copy cut to <paramref name="fraction"/> of its length.</summary>
    public static string Truncated(string zipPath, double fraction)
    {
        string path = TemporaryPath("truncated");
        var bytes = File.ReadAllBytes(zipPath);
        File.WriteAllBytes(path, bytes[..(int)(bytes.Length * fraction)]);
        return path;
    }

    /// <summary>A zip whose entry holding <paramref name="streamName"/> is cut in half: a valid archive with a damaged model
    /// inside.</summary>
    public static string WithTruncatedEntry(string zipPath, string streamName)
    {
        string path = TemporaryPath("damaged");
        File.Copy(zipPath, path);
        using var zip = ZipFile.Open(path, ZipArchiveMode.Update);
        var entry = zip.Entries.First(e => e.FullName.EndsWith(streamName, StringComparison.Ordinal));
        byte[] bytes;
        using (var s = entry.Open()) { var m = new MemoryStream(); s.CopyTo(m); bytes = m.ToArray(); }
        string name = entry.FullName;
        entry.Delete();
        using var w = zip.CreateEntry(name).Open();
        w.Write(bytes, 0, bytes.Length / 2);
        return path;
    }
}
