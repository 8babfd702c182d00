namespace Microsoft.ML.Peer.Layers;

/// <summary>
/// Expert usage over an evaluation pass, as the PEER paper defines it (§4.2): z'_i = Σ_x g_i(x),
/// z = z' / ‖z'‖₁; <see cref="UsedFraction"/> is the fraction of experts with z_i ≠ 0 and
/// <see cref="Unevenness"/> is KL(z ‖ uniform) = log N + Σ z_i log z_i (0 when perfectly even).
/// </summary>
public sealed record ExpertUsage(int Experts, long Retrievals, double UsedFraction, double Unevenness);
