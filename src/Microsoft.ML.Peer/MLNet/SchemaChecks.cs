using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peer;

/// <summary>
/// Input checks shared by the PEER estimators and transformers. Each error names the column, the type expected and
/// the type found: a wrong type is ML.NET's own schema-mismatch error; a missing column is ML.NET's wording with the
/// input's columns listed.
/// </summary>
internal static class SchemaChecks
{
    public static DataViewSchema.Column TextColumn(DataViewSchema schema, string name, string role = "text")
    {
        var column = Find(schema, name, role);
        if (column.Type is not TextDataViewType)
            throw Mismatch(role, name, "String", column.Type.ToString() ?? column.Type.GetType().Name);
        return column;
    }

    public static void TextColumn(SchemaShape schema, string name, string role = "text")
    {
        if (!schema.TryFindColumn(name, out var column))
            throw Missing(role, name, schema.Select(c => c.Name));
        if (column.Kind != SchemaShape.Column.VectorKind.Scalar || column.ItemType is not TextDataViewType)
            throw Mismatch(role, name, "String", Describe(column));
    }

    public static KeyDataViewType KeyLabelColumn(DataViewSchema schema, string name, out DataViewSchema.Column column)
    {
        column = Find(schema, name, "label");
        if (column.Type is not KeyDataViewType key || key.RawType != typeof(uint))
            throw Mismatch("label", name, "Key<UInt32> (map it with MapValueToKey)", column.Type.ToString() ?? column.Type.GetType().Name);
        return key;
    }

    public static void KeyLabelColumn(SchemaShape schema, string name)
    {
        if (!schema.TryFindColumn(name, out var column))
            throw Missing("label", name, schema.Select(c => c.Name));
        if (column.Kind != SchemaShape.Column.VectorKind.Scalar || !column.IsKey || column.ItemType.RawType != typeof(uint))
            throw Mismatch("label", name, "Key<UInt32> (map it with MapValueToKey)", Describe(column));
    }

    private static DataViewSchema.Column Find(DataViewSchema schema, string name, string role)
    {
        ArgumentNullException.ThrowIfNull(schema);
        return schema.GetColumnOrNull(name) ?? throw Missing(role, name, schema.Where(c => !c.IsHidden).Select(c => c.Name));
    }

    // ML.NET's wording, plus the columns the input does have (ML.NET's ExceptSchemaMismatch names only the missing one).
    private static ArgumentOutOfRangeException Missing(string role, string name, IEnumerable<string> available) =>
        new("inputSchema", $"Could not find {role} column '{name}'. The input has: {string.Join(", ", available.Select(n => $"'{n}'"))}.");

    private static Exception Mismatch(string role, string name, string expected, string actual) =>
        Contracts.ExceptSchemaMismatch("inputSchema", role, name, expected, actual);

    private static string Describe(SchemaShape.Column column) => column.Kind switch
    {
        SchemaShape.Column.VectorKind.Scalar => column.IsKey ? $"Key<{column.ItemType.RawType.Name}>" : $"{column.ItemType}",
        _ => $"Vector<{column.ItemType}>",
    };
}
