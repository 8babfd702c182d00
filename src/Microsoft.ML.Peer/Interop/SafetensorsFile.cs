using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Interop;

/// <summary>One tensor entry of a safetensors header: its name, element type, shape and byte range in the data section.</summary>
internal sealed record SafetensorsEntry(string Name, ScalarType Type, string DType, long[] Shape, long Begin, long End)
{
    public long Elements => Shape.Aggregate(1L, (a, b) => a * b);

    public string Describe() => $"{DType} [{string.Join(", ", Shape)}]";
}

/// <summary>
/// The safetensors format (https://github.com/huggingface/safetensors), written and read by its specification: an
/// unsigned 64-bit little-endian header length N, N bytes of UTF-8 JSON (padded with spaces to a multiple of 8), then the
/// raw little-endian data of every tensor. The header maps each tensor name to <c>{"dtype", "shape", "data_offsets":
/// [begin, end]}</c> (offsets into the data section) and may hold <c>"__metadata__"</c>, a map of strings to strings.
/// Reading validates the header completely before any tensor is allocated: the byte ranges must tile the data section
/// exactly (no gap, overlap or trailing byte, as the reference implementation requires), and each must hold exactly
/// its shape's bytes. Every failure is an <see cref="InvalidDataException"/> naming the tensor or field.
/// </summary>
internal static class SafetensorsFile
{
    /// <summary>The reference implementation's bound on the header (100 MB).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private const int MaxRank = 8;
    private const int MaxTensors = 1 << 16;
    private const int MaxNameLength = 4096;

    private static readonly (string DType, ScalarType Type, int Size)[] Types =
    {
        ("F32", ScalarType.Float32, 4), ("F64", ScalarType.Float64, 8), ("F16", ScalarType.Float16, 2), ("BF16", ScalarType.BFloat16, 2),
        ("I64", ScalarType.Int64, 8), ("I32", ScalarType.Int32, 4), ("I16", ScalarType.Int16, 2), ("I8", ScalarType.Int8, 1),
        ("U8", ScalarType.Byte, 1), ("BOOL", ScalarType.Bool, 1),
    };

    /// <summary>The safetensors dtype name of <paramref name="type"/>.</summary>
    public static string DTypeOf(ScalarType type) =>
        Types.FirstOrDefault(t => t.Type == type).DType
            ?? throw new NotSupportedException($"Element type {type} has no safetensors dtype here.");

    private static int SizeOf(ScalarType type) => Types.First(t => t.Type == type).Size;

    /// <summary>
    /// Writes <paramref name="tensors"/> (CPU tensors, written in the given order) and <paramref name="metadata"/> to
    /// <paramref name="stream"/>.
    /// </summary>
    public static void Write(Stream stream, IReadOnlyDictionary<string, string> metadata,
        IReadOnlyList<(string Name, Tensor Tensor)> tensors)
    {
        EnsureLittleEndian();
        var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteStartObject("__metadata__");
            foreach (var (key, value) in metadata) json.WriteString(key, value);
            json.WriteEndObject();
            long offset = 0;
            foreach (var (name, tensor) in tensors)
            {
                long bytes = tensor.numel() * SizeOf(tensor.dtype);
                json.WriteStartObject(name);
                json.WriteString("dtype", DTypeOf(tensor.dtype));
                json.WriteStartArray("shape");
                foreach (var d in tensor.shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + bytes);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += bytes;
            }
            json.WriteEndObject();
        }
        while (buffer.Length % 8 != 0) buffer.WriteByte((byte)' ');
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)buffer.Length);
        stream.Write(length);
        buffer.Position = 0;
        buffer.CopyTo(stream);
        foreach (var (_, tensor) in tensors)
        {
            using var scope = NewDisposeScope();
            var data = tensor.detach().cpu().contiguous();
            WriteData(stream, data);
        }
    }

    private static unsafe void WriteData(Stream stream, Tensor tensor)
    {
        long bytes = tensor.numel() * SizeOf(tensor.dtype);
        byte* data = (byte*)Native.PeerNativeMethods.TensorData(tensor.Handle);
        for (long done = 0; done < bytes;)
        {
            int chunk = (int)Math.Min(1 << 30, bytes - done);
            stream.Write(new ReadOnlySpan<byte>(data + done, chunk));
            done += chunk;
        }
    }

    /// <summary>
    /// Reads and validates the header of a safetensors stream of <paramref name="streamLength"/> bytes, positioned at its
    /// start; returns the metadata, the entries (in data order) and the position of the data section.
    /// </summary>
    public static (Dictionary<string, string> Metadata, List<SafetensorsEntry> Entries, long DataStart) ReadHeader(Stream stream,
        long streamLength)
    {
        Span<byte> lengthBytes = stackalloc byte[8];
        if (streamLength < 8) throw new InvalidDataException($"it is {streamLength} bytes long, shorter than the 8-byte header length.");
        stream.ReadExactly(lengthBytes);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength > MaxHeaderBytes)
            throw new InvalidDataException(
                $"its header length {headerLength:N0} exceeds the {MaxHeaderBytes:N0} bytes safetensors allows.");
        if ((long)headerLength > streamLength - 8)
            throw new InvalidDataException($"its header length {headerLength:N0} runs past the end of the file ({streamLength:N0} bytes).");
        var header = new byte[headerLength];
        stream.ReadExactly(header);
        long dataLength = streamLength - 8 - (long)headerLength;

        string text;
        try
        {
            // Decoded strictly first: JsonDocument accepts invalid UTF-8 inside strings and fails only when a name is read.
            text = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true).GetString(header);
        }
        catch (DecoderFallbackException e)
        {
            throw new InvalidDataException($"its header is not valid UTF-8: {e.Message}", e);
        }
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(text, new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"its header is not valid JSON: {e.Message}", e);
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidDataException("its header is not a JSON object.");
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var entries = new List<SafetensorsEntry>();
            var names = new HashSet<string>(StringComparer.Ordinal);
            foreach (var property in document.RootElement.EnumerateObject())
            {
                string name = Printable(property.Name);
                if (!names.Add(property.Name)) throw new InvalidDataException($"its header names '{name}' twice.");
                if (property.Name == "__metadata__")
                {
                    if (property.Value.ValueKind != JsonValueKind.Object)
                        throw new InvalidDataException("its '__metadata__' is not a JSON object of strings.");
                    foreach (var item in property.Value.EnumerateObject())
                    {
                        if (item.Value.ValueKind != JsonValueKind.String)
                            throw new InvalidDataException($"its '__metadata__' field '{Printable(item.Name)}' is not a string.");
                        if (!metadata.TryAdd(item.Name, item.Value.GetString()!))
                            throw new InvalidDataException($"its '__metadata__' names '{Printable(item.Name)}' twice.");
                    }
                    continue;
                }
                if (entries.Count >= MaxTensors) throw new InvalidDataException($"its header holds more than {MaxTensors:N0} tensors.");
                if (property.Name.Length == 0 || property.Name.Length > MaxNameLength)
                    throw new InvalidDataException(
                        $"its header holds a tensor name of {property.Name.Length} characters (1 to {MaxNameLength} allowed).");
                entries.Add(ReadEntry(property.Name, name, property.Value, dataLength));
            }
            entries.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
            long expected = 0;
            foreach (var entry in entries)
            {
                if (entry.Begin != expected)
                    throw new InvalidDataException(entry.Begin < expected
                        ? $"tensor '{entry.Name}' (bytes {entry.Begin:N0}..{entry.End:N0}) overlaps the tensor before it."
                        : $"the data section has {entry.Begin - expected:N0} bytes before tensor '{entry.Name}' that belong to no tensor.");
                expected = entry.End;
            }
            if (expected != dataLength)
                throw new InvalidDataException($"its data section is {dataLength:N0} bytes but its tensors cover {expected:N0}: the file is cut short or has bytes no tensor owns.");
            return (metadata, entries, 8 + (long)headerLength);
        }
    }

    private static SafetensorsEntry ReadEntry(string rawName, string name, JsonElement value, long dataLength)
    {
        if (value.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"tensor '{name}' is not described by a JSON object.");
        if (!value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw new InvalidDataException($"tensor '{name}' has no dtype string.");
        string dtype = dtypeElement.GetString()!;
        var known = Types.FirstOrDefault(t => t.DType == dtype);
        if (known.DType is null)
            throw new InvalidDataException($"tensor '{name}' has dtype '{Printable(dtype)}', which this reader does not know.");
        if (!value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"tensor '{name}' has no shape array.");
        if (shapeElement.GetArrayLength() > MaxRank)
            throw new InvalidDataException($"tensor '{name}' has rank {shapeElement.GetArrayLength()} (at most {MaxRank}).");
        var shape = new long[shapeElement.GetArrayLength()];
        long elements = 1;
        int i = 0;
        foreach (var d in shapeElement.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long size) || size < 0)
                throw new InvalidDataException($"dimension {i} of tensor '{name}' is not a non-negative integer.");
            // Every byte of a tensor lies in the file, so a shape that asks for more is refused before it can overflow.
            if (size != 0 && elements > dataLength / known.Size / size)
                throw new InvalidDataException($"tensor '{name}' [{string.Join(", ", shape[..i].Append(size))}...] holds more bytes than the file's {dataLength:N0}-byte data section.");
            elements *= size;
            shape[i++] = size;
        }
        if (!value.TryGetProperty("data_offsets", out var offsets) || offsets.ValueKind != JsonValueKind.Array ||
            offsets.GetArrayLength() != 2)
            throw new InvalidDataException($"tensor '{name}' has no data_offsets pair [begin, end].");
        var pair = offsets.EnumerateArray().ToArray();
        if (!pair[0].TryGetInt64(out long begin) || !pair[1].TryGetInt64(out long end) || begin < 0 || end < begin || end > dataLength)
            throw new InvalidDataException(
                $"tensor '{name}' has data_offsets [{pair[0]}, {pair[1]}] outside the {dataLength:N0}-byte data section.");
        if (end - begin != elements * known.Size)
            throw new InvalidDataException($"tensor '{name}' ({dtype} [{string.Join(", ", shape)}]) needs {elements * known.Size:N0} bytes but its data_offsets span {end - begin:N0}.");
        foreach (var property in value.EnumerateObject())
            if (property.Name is not ("dtype" or "shape" or "data_offsets"))
                throw new InvalidDataException($"tensor '{name}' has an unknown field '{Printable(property.Name)}'.");
        return new SafetensorsEntry(rawName, known.Type, dtype, shape, begin, end);
    }

    /// <summary>Reads the bytes of <paramref name="entry"/> into <paramref name="target"/> (contiguous, on the CPU, of the entry's type and
    /// size).</summary>
    public static unsafe void ReadData(Stream stream, long dataStart, SafetensorsEntry entry, Tensor target)
    {
        EnsureLittleEndian();
        if (target.dtype != entry.Type || target.numel() != entry.Elements || !target.is_contiguous() ||
            target.device_type != DeviceType.CPU)
            throw new InvalidOperationException(
                $"Tensor '{entry.Name}' cannot be read into a {target.dtype} [{string.Join(", ", target.shape)}] tensor.");
        stream.Position = dataStart + entry.Begin;
        byte* data = (byte*)Native.PeerNativeMethods.TensorData(target.Handle);
        long bytes = entry.End - entry.Begin;
        for (long done = 0; done < bytes;)
        {
            int read = stream.Read(new Span<byte>(data + done, (int)Math.Min(1 << 30, bytes - done)));
            if (read == 0) throw new InvalidDataException($"it ends inside the data of tensor '{Printable(entry.Name)}'.");
            done += read;
        }
    }

    /// <summary>A name as it can appear in an error message: a damaged one is shown escaped and cut.</summary>
    public static string Printable(string name)
    {
        if (name.Length <= 200 && name.All(c => !char.IsControl(c) && c != '\uFFFD')) return name;
        var escaped = new StringBuilder();
        foreach (char c in name.Take(64)) escaped.Append(char.IsControl(c) || c == '\uFFFD' ? $"\\u{(int)c:X4}" : c.ToString());
        return escaped.Append(name.Length > 64 ? "…" : "").ToString();
    }

    private static void EnsureLittleEndian()
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException(
                "safetensors data is little-endian; this reader and writer run on little-endian machines only.");
    }
}
