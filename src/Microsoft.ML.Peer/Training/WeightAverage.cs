using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Training;

/// <summary>
/// A running average of a model's parameters over its optimizer steps: polynomial-decay averaging (Shamir and Zhang, 2013) with
/// η = 3. After update t the average is ā_t = (1 − w_t)·ā_{t−1} + w_t·θ_t with w_t = (η + 1)/(t + η), so the first weights
/// count fully and fade, and the average leans towards the recent steps at every length of run; there is no horizon to tune.
/// Buffers (batch-norm statistics) are not averaged. Scoring with the average instead of the last step's weights is a cheap
/// ensemble of the run's recent models: on the classifier suite it lowered the cross-validated log-loss on every set
/// (docs/ml-net-plugin.md, "Third round").
/// </summary>
internal sealed class WeightAverage : IDisposable
{
    /// <summary>η of the polynomial decay: a step's weight in the average falls with (its step / the current step)^η.</summary>
    public const double Eta = 3;

    private readonly List<(Tensor Live, Tensor Average)> _pairs;
    private bool _swapped;

    /// <summary>An empty average of <paramref name="model"/>'s parameters (those whose name <paramref name="averaged"/> accepts; all
    /// when it is null): the first <see cref="Update"/> (w_1 = 1) sets it to them. The others keep their live values throughout.</summary>
    public WeightAverage(nn.Module model, Func<string, bool>? averaged = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var noGrad = no_grad();
        _pairs = model.named_parameters().Where(p => averaged?.Invoke(p.name) ?? true)
            .Select(p => ((Tensor)p.parameter, p.parameter.detach().clone())).ToList();
    }

    /// <summary>How many sets of weights the average holds: one per <see cref="Update"/>.</summary>
    public int Updates { get; private set; }

    /// <summary>Adds the model's current parameters to the average; call it after each optimizer step.</summary>
    public void Update()
    {
        if (_swapped) throw new InvalidOperationException("The model holds the average: swap the live weights back before updating.");
        Updates++;
        double weight = (Eta + 1) / (Updates + Eta);
        using var noGrad = no_grad();
        foreach (var (live, average) in _pairs) average.lerp_(live.detach(), weight);
    }

    /// <summary>Exchanges the model's parameters and the average, in place: once to score or keep the average, once more to go
    /// on training from the live weights exactly as they were.</summary>
    public void Swap()
    {
        if (Updates == 0) throw new InvalidOperationException("The average holds no weights yet: update it after a step first.");
        using var noGrad = no_grad();
        foreach (var (live, average) in _pairs)
        {
            using var copy = live.detach().clone();
            live.detach().copy_(average);
            average.copy_(copy);
        }
        _swapped = !_swapped;
    }

    /// <summary>Whether the model now holds the average.</summary>
    public bool ModelHoldsAverage => _swapped;

    public void Dispose()
    {
        foreach (var (_, average) in _pairs) average.Dispose();
        _pairs.Clear();
    }
}
