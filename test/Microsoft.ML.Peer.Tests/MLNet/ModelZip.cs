using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;

namespace Microsoft.ML.Peer.Tests.MLNet;

/// <summary>
/// A saved ML.NET model held in memory as its zip entries, for editing the PEER transformer's streams the way a damaged
/// disk or an attacker would: the options JSON, the tokenizer, the weights layout, the checksums.
/// </summary>
internal sealed class ModelZip
{
    private readonly List<(string Name, byte[] Bytes)> _entries;

    private ModelZip(List<(string, byte[])> entries) => _entries = entries;

    public static ModelZip Read(byte[] zip)
    {
        using var archive = new ZipArchive(new MemoryStream(zip), ZipArchiveMode.Read);
        return new ModelZip(archive.Entries.Select(e =>
        {
            using var s = e.Open();
            var m = new MemoryStream();
            s.CopyTo(m);
            return (e.FullName, m.ToArray());
        }).ToList());
    }

    public ModelZip Clone() => new(_entries.Select(e => (e.Name, e.Bytes.ToArray())).ToList());

    public byte[] ToBytes()
    {
        var m = new MemoryStream();
        using (var archive = new ZipArchive(m, ZipArchiveMode.Create, leaveOpen: true))
            foreach (var (name, bytes) in _entries)
                using (var s = archive.CreateEntry(name).Open()) s.Write(bytes);
        return m.ToArray();
    }

    public IEnumerable<string> Names => _entries.Select(e => e.Name);

    /// <summary>Whether both hold the same entries with the same bytes (a mutation that changed nothing).</summary>
    public bool SameContent(ModelZip other) =>
        _entries.Count == other._entries.Count &&
        _entries.Zip(other._entries).All(p => p.First.Name == p.Second.Name && p.First.Bytes.AsSpan().SequenceEqual(p.Second.Bytes));

    /// <summary>The full name of the entry whose name ends with <paramref name="stream"/> (the PEER transformer's one).</summary>
    public string Find(string stream)
        => _entries.Single(e => e.Name.EndsWith("/" + stream, StringComparison.Ordinal) || e.Name == stream).Name;

    public byte[] this[string stream]
    {
        get => _entries.Single(e => e.Name == Find(stream)).Bytes;
        set
        {
            int i = _entries.FindIndex(e => e.Name == Find(stream));
            _entries[i] = (_entries[i].Name, value);
        }
    }

    public void Remove(string stream)
    {
        string name = Find(stream);
        _entries.RemoveAll(e => e.Name == name);
    }

    /// <summary>The PEER transformer's own Model.key (ML.NET's header stream beside PeerOptions.json).</summary>
    public string PeerHeaderName
        => Path.GetDirectoryName(Find("PeerOptions.json"))!.Replace('\\', '/') is { Length: > 0 } dir ? dir + "/Model.key" : "Model.key";

    public byte[] PeerHeader
    {
        get => _entries.Single(e => e.Name == PeerHeaderName).Bytes;
        set { int i = _entries.FindIndex(e => e.Name == PeerHeaderName); _entries[i] = (_entries[i].Name, value); }
    }

    /// <summary>A stream written with BinaryWriter.Write(string): the options and the checksums.</summary>
    public string ReadString(string stream) => new BinaryReader(new MemoryStream(this[stream]), Encoding.UTF8).ReadString();

    public void WriteString(string stream, string value)
    {
        var m = new MemoryStream();
        using (var w = new BinaryWriter(m, Encoding.UTF8, leaveOpen: true)) w.Write(value);
        this[stream] = m.ToArray();
    }

    public JsonObject Options
    {
        get => JsonNode.Parse(ReadString("PeerOptions.json"))!.AsObject();
        set => WriteString("PeerOptions.json", value.ToJsonString());
    }

    /// <summary>Records the current bytes of every checksummed stream, as a writer that meant this content would.</summary>
    public void ResealChecksums()
    {
        var checksums = JsonNode.Parse(ReadString("PeerChecksums.json"))!.AsObject();
        foreach (var (name, value) in checksums["Streams"]!.AsObject().ToList())
        {
            var bytes = this[name];
            value!["Length"] = bytes.Length;
            value["Sha256"] = Convert.ToHexStringLower(SHA256.HashData(bytes));
        }
        WriteString("PeerChecksums.json", checksums.ToJsonString());
    }
}
