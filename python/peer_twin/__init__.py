"""peer_twin: a PyTorch twin of Microsoft.ML.Peer's models (PEER, PKM, MoE and dense feed-forwards; the transformer
language model and text classifier) that loads and writes the library's safetensors exports. Given the same weights
and token ids it reproduces the C# logits in evaluation mode (docs/interop.md)."""

from .models import TransformerLanguageModel, TransformerTextClassifier, load, save  # noqa: F401
