using System.Security.Cryptography;

namespace Microsoft.ML.Peer;

/// <summary>
/// A forward-only pass-through stream that hashes (SHA-256) and counts every byte read from or written to the stream
/// it wraps, so a model stream's checksum costs no second pass and no copy.
/// </summary>
internal sealed class ChecksumStream : Stream
{
    private readonly Stream _inner;
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

    public ChecksumStream(Stream inner) => _inner = inner ?? throw new ArgumentNullException(nameof(inner));

    /// <summary>Bytes that passed through so far.</summary>
    public long Count { get; private set; }

    /// <summary>The lower-case hex SHA-256 of the bytes that passed through so far.</summary>
    public string Digest() => Convert.ToHexStringLower(_hash.GetCurrentHash());

    public override bool CanRead => _inner.CanRead;
    public override bool CanSeek => false;
    public override bool CanWrite => _inner.CanWrite;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => Count; set => throw new NotSupportedException(); }
    public override void Flush() => _inner.Flush();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        int read = _inner.Read(buffer);
        _hash.AppendData(buffer[..read]);
        Count += read;
        return read;
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        _inner.Write(buffer);
        _hash.AppendData(buffer);
        Count += buffer.Length;
    }

    /// <summary>Reads whatever is left, so the digest covers the whole stream.</summary>
    public void Drain()
    {
        var buffer = new byte[81920];
        while (Read(buffer, 0, buffer.Length) > 0) { }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _hash.Dispose();  // the inner stream belongs to the caller
        base.Dispose(disposing);
    }
}
