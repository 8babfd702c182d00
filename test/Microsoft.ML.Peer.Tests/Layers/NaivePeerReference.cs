using Microsoft.ML.Peer.Layers;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Tests.Layers;

/// <summary>
/// The PEER layer written the slow, obvious way: per token, per head, score every one of the N keys,
/// sort, and sum the chosen single-neuron experts. Double precision throughout.
/// </summary>
internal static class NaivePeerReference
{
    public static double[][] Forward(PeerLayer layer, float[][] x, bool training)
    {
        var o = layer.Options;
        int T = x.Length, d = x[0].Length, h = o.Heads, k = o.TopK, dk = o.KeyDimension, half = dk / 2, n = o.SubKeys;
        var W = Matrix(layer.Router.QueryProjection.weight!);
        var c = Vector(layer.Router.QueryProjection.bias!);
        var sub = layer.Router.Retriever.SubKeys.detach().data<float>().ToArray(); // [2, n, half]
        var U = layer.DownWeights.detach().data<float>().ToArray();
        var V = layer.UpWeights.detach().data<float>().ToArray();

        // Query projection, then batch norm over the whole projected query.
        var q = new double[T][];
        for (int t = 0; t < T; t++)
        {
            q[t] = new double[h * dk];
            for (int r = 0; r < h * dk; r++)
            {
                double s = c[r];
                for (int j = 0; j < d; j++) s += W[r][j] * x[t][j];
                q[t][r] = s;
            }
        }
        if (layer.Router.QueryNorm is { } bn)
        {
            var gamma = Vector(bn.weight!);
            var beta = Vector(bn.bias!);
            var runningMean = Vector(bn.running_mean!);
            var runningVar = Vector(bn.running_var!);
            for (int r = 0; r < h * dk; r++)
            {
                double mean, variance;
                if (training)
                {
                    mean = Enumerable.Range(0, T).Average(t => q[t][r]);
                    variance = Enumerable.Range(0, T).Average(t => (q[t][r] - mean) * (q[t][r] - mean));
                }
                else
                {
                    mean = runningMean[r];
                    variance = runningVar[r];
                }
                for (int t = 0; t < T; t++) q[t][r] = (q[t][r] - mean) / Math.Sqrt(variance + 1e-5) * gamma[r] + beta[r];
            }
        }

        var y = new double[T][];
        for (int t = 0; t < T; t++)
        {
            y[t] = new double[d];
            for (int head = 0; head < h; head++)
            {
                // Score all N = n² keys [c_a ; c'_b].
                var scores = new (double Score, int Index)[n * n];
                for (int a = 0; a < n; a++)
                    for (int b = 0; b < n; b++)
                    {
                        double s = 0;
                        for (int j = 0; j < half; j++)
                            s += q[t][head * dk + j] * sub[(0 * n + a) * half + j]
                                + q[t][head * dk + half + j] * sub[(1 * n + b) * half + j];
                        scores[a * n + b] = (s, a * n + b);
                    }
                var top = scores.OrderByDescending(s => s.Score).Take(k).ToArray();
                double[] gates = o.ScoreActivation == ScoreActivation.Softmax
                    ? Softmax(top.Select(s => s.Score).ToArray())
                    : top.Select(s => 1 / (1 + Math.Exp(-s.Score))).ToArray();
                for (int j = 0; j < k; j++)
                {
                    int i = top[j].Index;
                    double dot = 0;
                    for (int m = 0; m < d; m++) dot += U[i * d + m] * x[t][m];
                    double activation = o.ExpertActivation == ExpertActivation.Gelu ? Gelu(dot) : Math.Max(0, dot);
                    for (int m = 0; m < d; m++) y[t][m] += gates[j] * activation * V[i * d + m];
                }
            }
        }
        return y;
    }

    private static double[] Softmax(double[] s)
    {
        double max = s.Max();
        var e = s.Select(v => Math.Exp(v - max)).ToArray();
        double sum = e.Sum();
        return e.Select(v => v / sum).ToArray();
    }

    private static double Gelu(double v) => 0.5 * v * (1 + Erf(v / Math.Sqrt(2)));

    // Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), enough for a 1e-5 comparison.
    private static double Erf(double v)
    {
        double sign = Math.Sign(v), a = Math.Abs(v);
        double t = 1 / (1 + 0.3275911 * a);
        double poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
        return sign * (1 - poly * Math.Exp(-a * a));
    }

    private static double[] Vector(Tensor t) => t.detach().to(ScalarType.Float64).data<double>().ToArray();

    private static double[][] Matrix(Tensor t)
    {
        var flat = Vector(t);
        int rows = (int)t.shape[0], cols = (int)t.shape[1];
        return Enumerable.Range(0, rows).Select(r => flat.Skip(r * cols).Take(cols).ToArray()).ToArray();
    }
}
