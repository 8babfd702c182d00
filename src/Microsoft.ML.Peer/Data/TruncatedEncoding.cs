namespace Microsoft.ML.Peer.Data;

/// <summary>Encoding a text to at most a given number of tokens, the ones <see cref="TextTruncation"/> picks.</summary>
internal static class TruncatedEncoding
{
    /// <summary>A text's token ids, at most <paramref name="maxTokens"/> of them, chosen as <paramref name="truncation"/> says.</summary>
    /// <remarks>
    /// Only the first <see cref="CharactersPerToken"/> × <paramref name="maxTokens"/> characters are tokenized (for
    /// <see cref="TextTruncation.KeepStartAndEnd"/>, that many characters' worth of each end), so the work per text is
    /// bounded whatever its length: a 10 MB mail costs what a 16 KB one does.
    /// </remarks>
    internal static int[] EncodeTruncated(this CompactTokenizer tokenizer, string text, int maxTokens, TextTruncation truncation)
    {
        long budget = (long)CharactersPerToken * maxTokens;
        int end = maxTokens / 2, start = maxTokens - end;
        if (text.Length > budget)
        {
            if (truncation == TextTruncation.KeepStart) text = text[..(int)budget];
            else
            {
                // Each end is tokenized on its own; the cut token at the inner edge of each part is among those dropped.
                var head = tokenizer.Encode(text[..(int)((long)CharactersPerToken * start)]);
                var tail = tokenizer.Encode(text[^(int)((long)CharactersPerToken * end)..]);
                return [.. head[..Math.Min(start, head.Length)], .. tail[^Math.Min(end, tail.Length)..]];
            }
        }
        var ids = tokenizer.Encode(text);
        if (ids.Length <= maxTokens) return ids;
        if (truncation == TextTruncation.KeepStart) return ids[..maxTokens];
        return [.. ids[..start], .. ids[^end..]];
    }

    /// <summary>
    /// Characters read per token a text may keep. cl100k tokens of prose average about 4 characters; 16 leaves room for
    /// long words, URLs and runs of spaces while bounding the work on a hostile text.
    /// </summary>
    internal const int CharactersPerToken = 16;
}
