using TorchSharp;

namespace Microsoft.ML.Peer;

/// <summary>One tensor of a saved weights stream: its name, element type and shape.</summary>
internal sealed record SavedTensor(string Name, torch.ScalarType Type, long[] Shape)
{
    public long Elements => Shape.Aggregate(1L, (a, b) => a * b);

    public string Describe() => $"{Type} [{string.Join(", ", Shape)}]";
}

/// <summary>
/// Reads the layout of a weights stream written by TorchSharp's <c>Module.save</c> (a LEB128 count, then per tensor a
/// LEB128-prefixed UTF-8 name, LEB128 element type, rank and dimensions, and the raw little-endian data) without
/// allocating a tensor: loading compares it with the model its options describe before building that model, so a file
/// cannot make loading allocate more than it holds.
/// </summary>
internal static class SavedStateDictionary
{
    private const int MaxTensors = 1 << 16;
    private const int MaxNameBytes = 4096;
    private const int MaxRank = 8;

    /// <summary>
    /// Reads every tensor's header and skips its data, to the end of <paramref name="stream"/>. Refuses, with an
    /// <see cref="InvalidDataException"/>, a layout that is malformed, holds more than <paramref name="maxElements"/>
    /// values, is cut short, or has bytes after the last tensor.
    /// </summary>
    public static IReadOnlyList<SavedTensor> Read(Stream stream, long maxElements)
    {
        var tensors = new List<SavedTensor>();
        long count = ReadLeb128(stream, "the tensor count");
        if (count > MaxTensors) throw new InvalidDataException($"it claims {count:N0} tensors (at most {MaxTensors:N0}).");
        long elements = 0;
        var buffer = new byte[81920];
        for (long t = 0; t < count; t++)
        {
            long nameLength = ReadLeb128(stream, $"the name length of tensor {t}");
            if (nameLength > MaxNameBytes)
                throw new InvalidDataException($"tensor {t}'s name claims {nameLength:N0} bytes (at most {MaxNameBytes}).");
            var nameBytes = new byte[nameLength];
            stream.ReadExactly(nameBytes);
            string name = Printable(System.Text.Encoding.UTF8.GetString(nameBytes));
            long code = ReadLeb128(stream, $"the element type of tensor '{name}'");
            var type = (torch.ScalarType)code;
            int size = ElementSize(type) ?? throw new InvalidDataException($"tensor '{name}' has unknown element type code {code}.");
            long rank = ReadLeb128(stream, $"the rank of tensor '{name}'");
            if (rank > MaxRank) throw new InvalidDataException($"tensor '{name}' claims rank {rank} (at most {MaxRank}).");
            var shape = new long[rank];
            long tensorElements = 1;
            for (int i = 0; i < rank; i++)
            {
                shape[i] = ReadLeb128(stream, $"dimension {i} of tensor '{name}'");
                // The running product never exceeds the budget, so it cannot overflow either.
                if (shape[i] != 0 && tensorElements > (maxElements - elements) / shape[i])
                    throw new InvalidDataException($"tensor '{name}' [{string.Join(", ", shape[..(i + 1)])}...] holds more values than the {maxElements:N0} the model's options describe.");
                tensorElements *= shape[i];
            }
            elements += tensorElements;
            Skip(stream, tensorElements * size, buffer, name);
            tensors.Add(new SavedTensor(name, type, shape));
        }
        if (stream.Read(buffer, 0, 1) != 0) throw new InvalidDataException("it has bytes after its last tensor.");
        return tensors;
    }

    /// <summary>A name as it can appear in an error message: a damaged one is shown escaped and cut.</summary>
    private static string Printable(string name)
    {
        if (name.Length <= 200 && name.All(c => !char.IsControl(c) && c != '\uFFFD')) return name;
        var escaped = new System.Text.StringBuilder();
        foreach (char c in name.Take(64)) escaped.Append(char.IsControl(c) || c == '\uFFFD' ? $"\\u{(int)c:X4}" : c.ToString());
        return escaped.Append(name.Length > 64 ? "…" : "").ToString();
    }

    /// <summary>Bytes per element of the types TorchSharp saves; null for a code that is not one.</summary>
    private static int? ElementSize(torch.ScalarType type) => type switch
    {
        torch.ScalarType.Byte or torch.ScalarType.Int8 or torch.ScalarType.Bool => 1,
        torch.ScalarType.Int16 or torch.ScalarType.Float16 or torch.ScalarType.BFloat16 => 2,
        torch.ScalarType.Int32 or torch.ScalarType.Float32 => 4,
        torch.ScalarType.Int64 or torch.ScalarType.Float64 or torch.ScalarType.ComplexFloat32 => 8,
        torch.ScalarType.ComplexFloat64 => 16,
        _ => null,
    };

    private static void Skip(Stream stream, long bytes, byte[] buffer, string name)
    {
        while (bytes > 0)
        {
            int read = stream.Read(buffer, 0, (int)Math.Min(buffer.Length, bytes));
            if (read == 0) throw new InvalidDataException($"it ends inside the data of tensor '{name}'.");
            bytes -= read;
        }
    }

    private static long ReadLeb128(Stream stream, string what)
    {
        long value = 0;
        for (int shift = 0; shift < 63; shift += 7)
        {
            int b = stream.ReadByte();
            if (b < 0) throw new InvalidDataException($"it ends inside {what}.");
            value |= (long)(b & 0x7F) << shift;
            if (b < 0x80) return value;
        }
        throw new InvalidDataException($"{what} is not a valid LEB128 number.");
    }
}
