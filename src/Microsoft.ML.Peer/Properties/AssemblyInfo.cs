using System.Runtime.CompilerServices;

// Lets unit tests reach parsing helpers (e.g. BrownCorpus.ParseTaggedText) without making them public API.
[assembly: InternalsVisibleTo("Microsoft.ML.Peer.Tests")]
