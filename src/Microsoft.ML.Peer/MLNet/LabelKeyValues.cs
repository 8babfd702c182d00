using System.Globalization;
using Microsoft.ML.Data;

namespace Microsoft.ML.Peer;

/// <summary>
/// The label column's key values (the class names MapKeyToValue turns PredictedLabel back into), kept with the model
/// so a loaded classifier annotates its outputs exactly as the trained one did. Stored as invariant strings with a type
/// tag, for the value types MapValueToKey produces from text, boolean and numeric labels.
/// </summary>
internal sealed class LabelKeyValues
{
    private static readonly (string Tag, Type Type)[] Supported =
    {
        ("TX", typeof(ReadOnlyMemory<char>)), ("BL", typeof(bool)), ("R4", typeof(float)), ("R8", typeof(double)),
        ("I4", typeof(int)), ("I8", typeof(long)), ("U4", typeof(uint)), ("U8", typeof(ulong)),
    };

    private LabelKeyValues(string tag, string[] values)
    {
        Tag = tag;
        Values = values;
    }

    public string Tag { get; }

    public string[] Values { get; }

    /// <summary>The key values of <paramref name="label"/>, or null if it has none (a key column made without them).</summary>
    public static LabelKeyValues? FromColumn(DataViewSchema.Column label, int classCount)
    {
        var annotation = label.Annotations.Schema.GetColumnOrNull(AnnotationUtils.Kinds.KeyValues);
        if (annotation is null) return null;
        var type = annotation.Value.Type as VectorDataViewType;
        var itemType = type?.ItemType.RawType;
        var entry = Supported.FirstOrDefault(s => s.Type == itemType);
        if (entry.Tag is null)
            throw new ArgumentOutOfRangeException("inputSchema",
                $"The key values of label column '{label.Name}' are {type?.ItemType}; supported are String, Boolean, Single, Double, Int32, Int64, UInt32 and UInt64.");
        string[] values = entry.Tag switch
        {
            "TX" => Read<ReadOnlyMemory<char>>(label, annotation.Value, v => v.ToString()),
            "BL" => Read<bool>(label, annotation.Value, v => v ? "True" : "False"),
            "R4" => Read<float>(label, annotation.Value, v => v.ToString("R", CultureInfo.InvariantCulture)),
            "R8" => Read<double>(label, annotation.Value, v => v.ToString("R", CultureInfo.InvariantCulture)),
            "I4" => Read<int>(label, annotation.Value, v => v.ToString(CultureInfo.InvariantCulture)),
            "I8" => Read<long>(label, annotation.Value, v => v.ToString(CultureInfo.InvariantCulture)),
            "U4" => Read<uint>(label, annotation.Value, v => v.ToString(CultureInfo.InvariantCulture)),
            _ => Read<ulong>(label, annotation.Value, v => v.ToString(CultureInfo.InvariantCulture)),
        };
        if (values.Length != classCount)
            throw new ArgumentOutOfRangeException(
                "inputSchema", $"Label column '{label.Name}' has {classCount} keys but {values.Length} key values.");
        return new LabelKeyValues(entry.Tag, values);
    }

    /// <summary>Key values of type <paramref name="tag"/> given as invariant strings (a safetensors export's metadata); checked as
    /// <see cref="Load"/> checks them.</summary>
    public static LabelKeyValues Create(string tag, string[] values)
    {
        if (Supported.All(s => s.Tag != tag)) throw new InvalidDataException($"unknown label key-value type tag '{tag}'.");
        if (values.Length > Models.ModelLimits.ClassCount)
            throw new InvalidDataException($"the label key-value count {values.Length} is above {Models.ModelLimits.ClassCount}.");
        for (int i = 0; i < values.Length; i++)
            if (values[i] is null || !Parses(tag, values[i]))
                throw new InvalidDataException($"label key value {i} ('{values[i]}') is not a value of type {tag}.");
        return new LabelKeyValues(tag, values);
    }

    public void Save(BinaryWriter writer)
    {
        writer.Write(Tag);
        writer.Write(Values.Length);
        foreach (var v in Values) writer.Write(v);
    }

    public static LabelKeyValues Load(BinaryReader reader)
    {
        string tag = reader.ReadString();
        if (Supported.All(s => s.Tag != tag)) throw new InvalidDataException($"unknown label key-value type tag '{tag}'.");
        int count = reader.ReadInt32();
        if (count < 0 || count > Models.ModelLimits.ClassCount)
            throw new InvalidDataException($"the label key-value count {count} is outside 0..{Models.ModelLimits.ClassCount}.");
        var values = new string[count];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = reader.ReadString();
            if (!Parses(tag, values[i]))
                throw new InvalidDataException($"label key value {i} ('{values[i]}') is not a value of type {tag}.");
        }
        return new LabelKeyValues(tag, values);
    }

    private static bool Parses(string tag, string value) => tag switch
    {
        "TX" => true,
        "BL" => value is "True" or "False",
        "R4" => float.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out _),
        "R8" => double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out _),
        "I4" => int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out _),
        "I8" => long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out _),
        "U4" => uint.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out _),
        _ => ulong.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out _),
    };

    /// <summary>The KeyValues annotation for a key column with these values.</summary>
    public DataViewSchema.Annotations KeyValuesAnnotation()
    {
        var builder = new DataViewSchema.Annotations.Builder();
        switch (Tag)
        {
            case "TX": Add(builder, TextDataViewType.Instance, Values.Select(v => v.AsMemory())); break;
            case "BL": Add(builder, BooleanDataViewType.Instance, Values.Select(v => v == "True")); break;
            case "R4": Add(builder, NumberDataViewType.Single, Values.Select(v => float.Parse(v, CultureInfo.InvariantCulture))); break;
            case "R8": Add(builder, NumberDataViewType.Double, Values.Select(v => double.Parse(v, CultureInfo.InvariantCulture))); break;
            case "I4": Add(builder, NumberDataViewType.Int32, Values.Select(v => int.Parse(v, CultureInfo.InvariantCulture))); break;
            case "I8": Add(builder, NumberDataViewType.Int64, Values.Select(v => long.Parse(v, CultureInfo.InvariantCulture))); break;
            case "U4": Add(builder, NumberDataViewType.UInt32, Values.Select(v => uint.Parse(v, CultureInfo.InvariantCulture))); break;
            default: Add(builder, NumberDataViewType.UInt64, Values.Select(v => ulong.Parse(v, CultureInfo.InvariantCulture))); break;
        }
        return builder.ToAnnotations();
    }

    /// <summary>Class names for the Score column's slots.</summary>
    public DataViewSchema.Annotations.Builder AddSlotNames(DataViewSchema.Annotations.Builder builder)
    {
        var names = new VBuffer<ReadOnlyMemory<char>>(Values.Length, Values.Select(v => v.AsMemory()).ToArray());
        builder.AddSlotNames(Values.Length, (ref VBuffer<ReadOnlyMemory<char>> value) => names.CopyTo(ref value));
        return builder;
    }

    private static void Add<T>(DataViewSchema.Annotations.Builder builder, PrimitiveDataViewType itemType, IEnumerable<T> values)
    {
        var array = values.ToArray();
        var buffer = new VBuffer<T>(array.Length, array);
        builder.AddKeyValues(array.Length, itemType, (ref VBuffer<T> value) => buffer.CopyTo(ref value));
    }

    private static string[] Read<T>(DataViewSchema.Column label, DataViewSchema.Column annotation, Func<T, string> format)
    {
        VBuffer<T> values = default;
        label.Annotations.GetGetter<VBuffer<T>>(annotation)(ref values);
        return values.DenseValues().Select(format).ToArray();
    }
}
