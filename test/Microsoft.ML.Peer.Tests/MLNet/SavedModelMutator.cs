using System.Text;
using System.Text.Json.Nodes;

namespace Microsoft.ML.Peer.Tests.MLNet;

/// <summary>One mutated model: what was done, the file, and whether loading it must fail.</summary>
/// <param name="MustFail">True where the mutation changed a PEER stream and left its checksum stale: such a file must never load.</param>
internal sealed record MutatedModel(string Kind, string Description, byte[] Zip, bool MustFail);

/// <summary>
/// Damages a saved model the ways a disk, a transfer or an attacker would: size fields and types in the options, shapes,
/// element types and names in the weights' layout, truncations, appended bytes, flipped bytes, swapped and missing
/// streams, and raw byte flips anywhere in the zip. Where a mutation "reseals", the checksums are recomputed over the
/// damaged streams, as a deliberate forger would, so the checks behind the checksums are exercised too.
/// </summary>
internal sealed class SavedModelMutator
{
    private static readonly string[] PeerStreams = { "PeerOptions.json", "PeerTokenizer.bin", "PeerWeights.bin", "PeerChecksums.json" };
    private readonly ModelZip _original;
    private readonly byte[] _originalBytes;
    private readonly Random _random;

    public SavedModelMutator(byte[] zip, int seed)
    {
        _originalBytes = zip;
        _original = ModelZip.Read(zip);
        _random = new Random(seed);
    }

    private static readonly (string Kind, int Weight)[] Kinds =
    {
        ("options-number", 6), ("options-null", 2), ("options-type", 2), ("options-bytes", 2),
        ("weights-field", 6), ("weights-name", 2), ("weights-swap-names", 2), ("weights-data", 2),
        ("weights-truncate", 2), ("weights-append", 1),
        ("tokenizer", 3), ("header", 2), ("checksums", 2), ("stream-swap", 2), ("stream-delete", 1),
        ("zip-flip", 3), ("zip-truncate", 1),
    };

    /// <summary>The next mutation; one that happens to leave every byte as it was (a value set to itself) is drawn again.</summary>
    public MutatedModel Next()
    {
        while (true)
        {
            var mutated = Draw(out var zip);
            if (zip is null || !zip.SameContent(_original)) return mutated;
        }
    }

    private MutatedModel Draw(out ModelZip? mutatedZip)
    {
        mutatedZip = null;
        int total = Kinds.Sum(k => k.Weight), pick = _random.Next(total);
        string kind = Kinds.First(k => (pick -= k.Weight) < 0).Kind;
        var zip = mutatedZip = _original.Clone();
        bool reseal = _random.NextDouble() < 0.5;
        string what;
        switch (kind)
        {
            case "options-number": what = OptionsNumber(zip); break;
            case "options-null": what = OptionsReplace(zip, null); break;
            case "options-type": what = OptionsReplace(zip, _random.Next(2) == 0 ? JsonValue.Create("x") : new JsonArray(1, 2)); break;
            case "options-bytes": what = FlipBytes(zip, "PeerOptions.json"); break;
            case "weights-field": what = WeightsField(zip); break;
            case "weights-name": what = WeightsName(zip); break;
            case "weights-swap-names": what = SwapNames(zip); break;
            case "weights-data": what = FlipBytes(zip, "PeerWeights.bin"); break;
            case "weights-truncate": what = Truncate(zip, "PeerWeights.bin"); break;
            case "weights-append":
                zip["PeerWeights.bin"] = [.. zip["PeerWeights.bin"], .. RandomBytes(1 + _random.Next(64))];
                what = "appended bytes";
                break;
            case "tokenizer":
                what = _random.Next(3) switch
                {
                    0 => FlipBytes(zip, "PeerTokenizer.bin"),
                    1 => Truncate(zip, "PeerTokenizer.bin"),
                    _ => SwapTokenizerIds(zip)
                };
                break;
            case "header":
                return new MutatedModel(kind, FlipHeader(zip), zip.ToBytes(), MustFail: false);   // ML.NET's header has unused bytes
            case "checksums":
                // The writer's version in it is informational, so a flip there may load: such files need not fail.
                what = _random.Next(2) == 0 ? FlipBytes(zip, "PeerChecksums.json") : Truncate(zip, "PeerChecksums.json");
                return new MutatedModel(kind, what, zip.ToBytes(), MustFail: false);
            case "stream-swap": what = SwapStreams(zip); break;
            case "stream-delete":
            {
                string s = PeerStreams[_random.Next(PeerStreams.Length)];
                zip.Remove(s);
                what = $"deleted {s}";
                reseal = false;
                break;
            }
            case "zip-flip": mutatedZip = null; return new MutatedModel(kind, FlipZip(out var flipped), flipped, MustFail: false);
            default:
            {
                mutatedZip = null;
                int at = _random.Next(_originalBytes.Length);
                return new MutatedModel(kind, $"cut at {at} of {_originalBytes.Length}", _originalBytes[..at], MustFail: true);
            }
        }
        if (reseal && zip.Names.Any(n => n.EndsWith("PeerChecksums.json", StringComparison.Ordinal)))
        {
            try { zip.ResealChecksums(); what += ", resealed"; }
            catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or KeyNotFoundException
                or EndOfStreamException or NullReferenceException)
            {
                reseal = false;
            }
        }
        else reseal = false;
        return new MutatedModel(kind, what, zip.ToBytes(), MustFail: !reseal);
    }

    private byte[] RandomBytes(int count)
    {
        var bytes = new byte[count];
        _random.NextBytes(bytes);
        return bytes;
    }

    private static List<(string Path, JsonNode? Parent, string Key, JsonNode? Value)> Leaves(JsonNode node, string path)
    {
        var leaves = new List<(string, JsonNode?, string, JsonNode?)>();
        if (node is JsonObject o)
            foreach (var (key, value) in o)
            {
                leaves.Add((path + key, o, key, value));
                if (value is JsonObject) leaves.AddRange(Leaves(value, path + key + "."));
            }
        return leaves;
    }

    private string OptionsNumber(ModelZip zip)
    {
        var options = zip.Options;
        var numbers =
            Leaves(options, "").Where(l => l.Value is JsonValue v && v.GetValueKind() == System.Text.Json.JsonValueKind.Number).ToList();
        var (path, parent, key, value) = numbers[_random.Next(numbers.Count)];
        double old = value!.GetValue<double>();
        double[] choices = { 0, -1, 1, 3, int.MaxValue, int.MinValue, old * 2, old + 1, old * old, 65536, 4096.0 * 4096, 1e12, 0.5 };
        double now = old;
        while (now == old) now = choices[_random.Next(choices.Length)];
        parent![key] = now == Math.Floor(now) && Math.Abs(now) < 9e15 ? JsonValue.Create((long)now) : JsonValue.Create(now);
        zip.Options = options;
        return $"{path}: {old} → {now}";
    }

    private string OptionsReplace(ModelZip zip, JsonNode? replacement)
    {
        var options = zip.Options;
        var leaves = Leaves(options, "");
        var (path, parent, key, _) = leaves[_random.Next(leaves.Count)];
        parent![key] = replacement;
        zip.Options = options;
        return $"{path} → {replacement?.ToJsonString() ?? "null"}";
    }

    private string FlipBytes(ModelZip zip, string stream)
    {
        var bytes = zip[stream];
        int flips = 1 + _random.Next(3);
        var at = new List<int>();
        for (int i = 0; i < flips && bytes.Length > 0; i++)
        {
            int p = _random.Next(bytes.Length);
            bytes[p] ^= (byte)(1 << _random.Next(8));
            at.Add(p);
        }
        return $"{stream}: bits flipped at {string.Join(", ", at)} of {bytes.Length}";
    }

    private string Truncate(ModelZip zip, string stream)
    {
        var bytes = zip[stream];
        int at = _random.Next(bytes.Length);
        zip[stream] = bytes[..at];
        return $"{stream}: cut at {at} of {bytes.Length}";
    }

    /// <summary>Offsets of the weights layout's LEB128 fields, and of each name, by a reading of TorchSharp's format.</summary>
    private static (List<(string Field, int Offset, int Length)> Fields, List<(int Offset, int Length)> Names) Layout(byte[] w)
    {
        var fields = new List<(string, int, int)>();
        var names = new List<(int, int)>();
        int at = 0;
        long Leb(string field)
        {
            int start = at;
            long value = 0;
            for (int shift = 0; ; shift += 7)
            {
                byte b = w[at++];
                value |= (long)(b & 0x7F) << shift;
                if (b < 0x80) break;
            }
            fields.Add((field, start, at - start));
            return value;
        }
        long count = Leb("count");
        for (int t = 0; t < count; t++)
        {
            int length = (int)Leb($"name length {t}");
            names.Add((at, length));
            string name = Encoding.UTF8.GetString(w, at, length);
            at += length;
            long type = Leb($"{name} type");
            long rank = Leb($"{name} rank");
            long elements = 1;
            for (int d = 0; d < rank; d++) elements *= Leb($"{name} dim {d}");
            at += (int)(elements * (type == 4 ? 8 : 4));
        }
        return (fields, names);
    }

    private static byte[] Leb128(long value)
    {
        var bytes = new List<byte>();
        do
        {
            byte b = (byte)(value & 0x7F);
            value >>= 7;
            if (value != 0) b |= 0x80;
            bytes.Add(b);
        } while (value != 0);
        return bytes.ToArray();
    }

    private string WeightsField(ModelZip zip)
    {
        var w = zip["PeerWeights.bin"];
        var (fields, _) = Layout(w);
        var (field, offset, length) = fields[_random.Next(fields.Count)];
        long[] choices = { 0, 1, 2, 3, 5, 7, 11, 15, 255, 1 << 20, int.MaxValue, 1L << 40, long.MaxValue >> 1 };
        long value = choices[_random.Next(choices.Length)];
        zip["PeerWeights.bin"] = [.. w[..offset], .. Leb128(value), .. w[(offset + length)..]];
        return $"PeerWeights.bin: {field} → {value}";
    }

    private string WeightsName(ModelZip zip)
    {
        var w = zip["PeerWeights.bin"];
        var (_, names) = Layout(w);
        var (offset, length) = names[_random.Next(names.Count)];
        int at = offset + _random.Next(length);
        w[at] = (byte)(_random.Next(2) == 0 ? 'X' : _random.Next(256));
        return $"PeerWeights.bin: a byte of the name at {offset} changed";
    }

    private string SwapNames(ModelZip zip)
    {
        var w = zip["PeerWeights.bin"];
        var (_, names) = Layout(w);
        var byLength = names.GroupBy(n => n.Length).Where(g => g.Count() > 1).ToList();
        if (byLength.Count == 0) return WeightsName(zip);
        var group = byLength[_random.Next(byLength.Count)].ToList();
        var a = group[_random.Next(group.Count)];
        var b = group.First(n => n != a);
        var first = w.AsSpan(a.Offset, a.Length).ToArray();
        w.AsSpan(b.Offset, b.Length).CopyTo(w.AsSpan(a.Offset, a.Length));
        first.CopyTo(w.AsSpan(b.Offset, b.Length));
        return $"PeerWeights.bin: names of '{Encoding.UTF8.GetString(first)}' and '{Encoding.UTF8.GetString(w, a.Offset, a.Length)}' swapped";
    }

    private string SwapTokenizerIds(ModelZip zip)
    {
        var t = zip["PeerTokenizer.bin"];
        int count = (t.Length - 12) / 4;
        if (count < 2) return FlipBytes(zip, "PeerTokenizer.bin");
        int i = 12 + 4 * _random.Next(count), j = 12 + 4 * _random.Next(count);
        var first = t.AsSpan(i, 4).ToArray();
        t.AsSpan(j, 4).CopyTo(t.AsSpan(i, 4));
        first.CopyTo(t.AsSpan(j, 4));
        return $"PeerTokenizer.bin: ids at {i} and {j} swapped";
    }

    private string FlipHeader(ModelZip zip)
    {
        var h = zip.PeerHeader;
        int p = _random.Next(h.Length);
        h[p] ^= (byte)(1 << _random.Next(8));
        return $"{zip.PeerHeaderName}: bit flipped at {p} of {h.Length}";
    }

    private string SwapStreams(ModelZip zip)
    {
        string a = PeerStreams[_random.Next(PeerStreams.Length)],
            b = PeerStreams.Where(s => s != a).ElementAt(_random.Next(PeerStreams.Length - 1));
        (zip[a], zip[b]) = (zip[b], zip[a]);
        return $"{a} and {b} swapped";
    }

    private string FlipZip(out byte[] bytes)
    {
        bytes = _originalBytes.ToArray();
        int p = _random.Next(bytes.Length);
        bytes[p] ^= (byte)(1 << _random.Next(8));
        return $"zip: bit flipped at {p} of {bytes.Length}";
    }
}
