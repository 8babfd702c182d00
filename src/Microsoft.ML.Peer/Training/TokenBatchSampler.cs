using static TorchSharp.torch;

namespace Microsoft.ML.Peer.Training;

/// <summary>
/// Draws training windows from one token stream. The batch of step s depends only on (seed, s), so a run
/// resumed from a checkpoint sees exactly the batches the uninterrupted run would have seen.
/// </summary>
internal sealed class TokenBatchSampler
{
    private readonly int[] _tokens;
    private readonly int _batchSize;
    private readonly int _sequenceLength;
    private readonly int _seed;

    public TokenBatchSampler(int[] tokens, int batchSize, int sequenceLength, int seed)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (tokens.Length < sequenceLength + 1)
            throw new ArgumentException($"The training stream has {tokens.Length} tokens; at least {sequenceLength + 1} are needed for one sequence of {sequenceLength}.", nameof(tokens));
        _tokens = tokens;
        _batchSize = batchSize;
        _sequenceLength = sequenceLength;
        _seed = seed;
    }

    /// <summary>Inputs and next-token targets, each [batch, sequence] int64, for optimizer step <paramref name="step"/>.</summary>
    public (Tensor Inputs, Tensor Targets) Batch(int step)
    {
        var random = new Random(unchecked(_seed * 1_000_003 + step));
        var inputs = new long[_batchSize * _sequenceLength];
        var targets = new long[_batchSize * _sequenceLength];
        int span = _tokens.Length - _sequenceLength;
        for (int b = 0; b < _batchSize; b++)
        {
            int start = random.Next(span);
            for (int t = 0; t < _sequenceLength; t++)
            {
                inputs[b * _sequenceLength + t] = _tokens[start + t];
                targets[b * _sequenceLength + t] = _tokens[start + t + 1];
            }
        }
        return (tensor(inputs, new long[] { _batchSize, _sequenceLength }), tensor(targets, new long[] { _batchSize, _sequenceLength }));
    }
}
