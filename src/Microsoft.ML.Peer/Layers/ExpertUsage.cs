namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// Expert usage over an evaluation pass, as the PEER paper defines it (§4.2): z'_i = Σ_x g_i(x),
/// z = z' / ‖z'‖₁; <see cref="UsedFraction"/> is the fraction of experts with z_i ≠ 0 and
/// <see cref="Unevenness"/> is KL(z ‖ uniform) = log N + Σ z_i log z_i (0 when perfectly even).
/// </summary>
/// <param name="Experts">N.</param>
/// <param name="Retrievals">Expert slots retrieved over the pass (tokens × h × k).</param>
/// <param name="UsedFraction">Fraction of the N experts with non-zero router weight.</param>
/// <param name="Unevenness">KL(z ‖ uniform), nats.</param>
/// <param name="TopPercentShare">Share of the total router weight held by the 1% most used experts (0.01 when even).</param>
/// <param name="InputEffectiveRank">
/// Effective rank of the layer's input over the pass: exp of the entropy of its covariance's normalised eigenvalues
/// (Roy and Vetterli, 2007); d when every direction carries equal variance, 1 when the inputs lie on one line. A
/// collapse here limits usage before the router can act.
/// </param>
/// <param name="QueryEffectiveRank">The same for the (normalised) query vectors, all heads together.</param>
public sealed record ExpertUsage(int Experts, long Retrievals, double UsedFraction, double Unevenness,
    double TopPercentShare, double InputEffectiveRank, double QueryEffectiveRank);
