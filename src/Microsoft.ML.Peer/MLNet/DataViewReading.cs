using Microsoft.ML.Runtime;
using Microsoft.ML.Data;

namespace Microsoft.ML.Peer;

/// <summary>Reads the columns a PEER trainer learns from, once, into memory (the models train for several epochs).</summary>
internal static class DataViewReading
{
    /// <summary>Every text of <paramref name="column"/>; a missing (default) value reads as the empty string.</summary>
    public static List<string> Texts(IDataView data, DataViewSchema.Column column, IHost host)
    {
        var texts = new List<string>();
        using var cursor = data.GetRowCursor(new[] { column });
        var getter = cursor.GetGetter<ReadOnlyMemory<char>>(column);
        ReadOnlyMemory<char> value = default;
        while (cursor.MoveNext())
        {
            if ((texts.Count & 1023) == 0) host.CheckAlive();
            getter(ref value);
            texts.Add(value.ToString());
        }
        return texts;
    }

    /// <summary>Texts and 0-based class indices (and, given a <paramref name="group"/> text column, each row's group); rows whose key
    /// label is missing (0) are skipped and counted. Given <paramref name="everyText"/>, the same pass also adds to it the text of
    /// every row, labelled or not, in the data's order (for pre-training, so the data is read once).</summary>
    public static (List<string> Texts, List<int> Labels, int SkippedMissingLabels, List<string>? Groups) LabeledTexts(IDataView data,
        DataViewSchema.Column text, DataViewSchema.Column label, IHost host, DataViewSchema.Column? group = null,
        List<string>? everyText = null)
    {
        var texts = new List<string>();
        var labels = new List<int>();
        var groups = group is null ? null : new List<string>();
        int skipped = 0;
        using var cursor = data.GetRowCursor(group is { } g ? new[] { text, label, g } : new[] { text, label });
        var textGetter = cursor.GetGetter<ReadOnlyMemory<char>>(text);
        var labelGetter = cursor.GetGetter<uint>(label);
        var groupGetter = group is { } column ? cursor.GetGetter<ReadOnlyMemory<char>>(column) : null;
        ReadOnlyMemory<char> value = default, groupValue = default;
        uint key = 0;
        while (cursor.MoveNext())
        {
            if (((texts.Count + skipped) & 1023) == 0) host.CheckAlive();
            labelGetter(ref key);
            bool labelled = key != 0;
            if (!labelled) skipped++;
            // An unlabelled row's text is read only when pre-training wants it.
            if (!labelled && everyText is null) continue;
            textGetter(ref value);
            string read = value.ToString();
            everyText?.Add(read);
            if (!labelled) continue;
            texts.Add(read);
            labels.Add((int)key - 1);
            if (groupGetter is not null)
            {
                groupGetter(ref groupValue);
                groups!.Add(groupValue.ToString());
            }
        }
        return (texts, labels, skipped, groups);
    }
}
