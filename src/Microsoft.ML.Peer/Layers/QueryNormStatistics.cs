namespace Microsoft.ML.Peer.Layers;

/// <summary>Which mean and variance normalise the queries of a product-key layer outside training.</summary>
public enum QueryNormStatistics
{
    /// <summary>The batch norm's running statistics, as scoring uses them (the default).</summary>
    Running,

    /// <summary>
    /// Each evaluation batch's own statistics, as training uses them; the running statistics are left unchanged. Early in
    /// training the running statistics lag the queries' scale, and usage measured with them understates what training sees.
    /// </summary>
    Batch,
}
