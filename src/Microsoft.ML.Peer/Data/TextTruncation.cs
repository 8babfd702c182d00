namespace Microsoft.ML.Peer;

/// <summary>Which tokens of a text longer than the classifier's MaxSequenceLength it reads.</summary>
public enum TextTruncation
{
    /// <summary>
    /// The first and the last MaxSequenceLength/2 tokens (the first one more when it is odd). For a mail that is the
    /// headers and the end of the body; on SpamAssassin it halved the errors of <see cref="KeepStart"/> (docs/ml-net-plugin.md).
    /// </summary>
    KeepStartAndEnd,

    /// <summary>The first MaxSequenceLength tokens.</summary>
    KeepStart,
}
