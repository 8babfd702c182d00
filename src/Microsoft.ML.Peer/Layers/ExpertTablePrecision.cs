namespace Microsoft.ML.Peer.Layers;

/// <summary>How a PEER layer stores its expert tables u and v (and the row-sparse optimizer its moments of them).</summary>
public enum ExpertTablePrecision
{
    /// <summary>IEEE float32: 4 bytes per weight.</summary>
    Float32,

    /// <summary>
    /// bfloat16: 2 bytes per weight, half the memory and half the bytes read per retrieved row. The experts still compute
    /// in float32 (rows are widened exactly); the row-sparse AdamW updates each touched row in float32 and stores the
    /// weights and both moments back with stochastic rounding, so updates smaller than bfloat16's resolution are kept on
    /// average rather than lost. Needs sparse row gradients.
    /// </summary>
    BFloat16,
}
