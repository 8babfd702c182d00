using System.Globalization;
using Microsoft.ML.Data;

namespace Microsoft.ML.Peer.ModelScorer;

/// <summary>Formats scored rows so two processes' outputs can be compared exactly.</summary>
public static class ScoreFormatter
{
    /// <summary>One line per row: every float, float-vector, int and key column except Text; floats as raw bits.</summary>
    public static IEnumerable<string> ScoreLines(IDataView scored)
    {
        var columns = scored.Schema.Where(c => !c.IsHidden && c.Name != "Text").ToArray();
        using var cursor = scored.GetRowCursor(columns);
        var readers = columns.Select(c => Reader(cursor, c)).ToArray();
        while (cursor.MoveNext())
            yield return string.Join(' ', readers.Select(r => r()));
    }

    private static Func<string> Reader(DataViewRowCursor cursor, DataViewSchema.Column column)
    {
        static string Bits(float f) => BitConverter.SingleToInt32Bits(f).ToString("X8", CultureInfo.InvariantCulture);
        switch (column.Type)
        {
            case NumberDataViewType t when t.RawType == typeof(float):
            {
                var get = cursor.GetGetter<float>(column);
                return () => { float v = 0; get(ref v); return $"{column.Name}={Bits(v)}"; };
            }
            case NumberDataViewType t when t.RawType == typeof(int):
            {
                var get = cursor.GetGetter<int>(column);
                return () => { int v = 0; get(ref v); return $"{column.Name}={v}"; };
            }
            case KeyDataViewType:
            {
                var get = cursor.GetGetter<uint>(column);
                return () => { uint v = 0; get(ref v); return $"{column.Name}={v}"; };
            }
            case VectorDataViewType v when v.ItemType.RawType == typeof(float):
            {
                var get = cursor.GetGetter<VBuffer<float>>(column);
                return () =>
                {
                    VBuffer<float> b = default;
                    get(ref b);
                    return $"{column.Name}=" + string.Join(',', b.DenseValues().Select(Bits));
                };
            }
            default:
                return () => $"{column.Name}=?";
        }
    }
}

public sealed class TextRow
{
    public string? Text { get; set; }
}
