"""The transformer language model and text classifier of Microsoft.ML.Peer in PyTorch (src/Microsoft.ML.Peer/Models),
and the loader and writer of their safetensors exports (src/Microsoft.ML.Peer/Interop/PeerSafetensors.cs)."""

import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import safetensors_io
from .layers import DenseFeedForward, MixtureOfExpertsFeedForward, PeerLayer, ProductKeyMemory

FORMAT_VERSION = "1"
LANGUAGE_MODEL = "language_model"
TEXT_CLASSIFIER = "text_classifier"


def effective_dense_hidden(config):
    return config.get("DenseHiddenDimension") or 4 * config["ModelDimension"]


def effective_sparse_blocks(config):
    """TransformerOptions.EffectiveSparseBlocks: none for Dense or without blocks, else SparseBlocks or the middle one."""
    if config.get("FeedForward", "Peer") == "Dense" or config["Layers"] == 0:
        return []
    blocks = config.get("SparseBlocks")
    return list(blocks) if blocks is not None else [config["Layers"] // 2]


def create_feed_forward(config, kind):
    d = config["ModelDimension"]
    if kind == "Dense":
        return DenseFeedForward(d, effective_dense_hidden(config))
    if kind == "MoE":
        hidden = config.get("MoeHiddenDimension") or effective_dense_hidden(config)
        return MixtureOfExpertsFeedForward(d, hidden, config["MoeExperts"], config["MoeTopK"])
    if kind == "ProductKeyMemory":
        return ProductKeyMemory(d, config["ProductKeyMemory"])
    if kind == "Peer":
        return PeerLayer(d, config["Peer"])
    raise ValueError(f"Unknown FeedForward kind {kind!r}")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention, causal or bidirectional with padding keys masked (CausalSelfAttention.cs)."""

    def __init__(self, dimension, heads, causal=True):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(dimension, 3 * dimension)
        self.output = nn.Linear(dimension, dimension)

    def forward(self, x, key_mask=None):
        batch, time, dimension = x.shape
        q, k, v = self.qkv(x).view(batch, time, 3, self.heads, dimension // self.heads).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(dimension // self.heads)
        mask = None
        if key_mask is not None:
            mask = key_mask.view(batch, 1, 1, time)
        if self.causal:
            causal = torch.ones(time, time, dtype=torch.bool, device=x.device).tril()
            mask = causal if mask is None else mask & causal
        if mask is not None:
            scores = scores.masked_fill(~mask, -math.inf)
        attended = torch.matmul(F.softmax(scores, dim=-1), v)
        return self.output(attended.transpose(1, 2).reshape(batch, time, dimension))


class TransformerBlock(nn.Module):
    """Pre-norm block; with a token mask the feed-forward runs on the real tokens only (TransformerBlock.cs)."""

    def __init__(self, dimension, heads, feed_forward, causal=True):
        super().__init__()
        self.attention_norm = nn.LayerNorm(dimension)
        self.attention = CausalSelfAttention(dimension, heads, causal)
        self.feed_forward_norm = nn.LayerNorm(dimension)
        self.feed_forward = feed_forward

    def forward(self, x, token_mask=None):
        h = x + self.attention(self.attention_norm(x), token_mask)
        normed = self.feed_forward_norm(h)
        if token_mask is None:
            return h + self.feed_forward(normed)
        flat = normed.reshape(-1, normed.shape[-1])
        real = token_mask.reshape(-1).nonzero().squeeze(1)
        update = torch.zeros_like(flat).index_copy(0, real, self.feed_forward(flat.index_select(0, real)))
        return h + update.view(h.shape)


class TransformerLanguageModel(nn.Module):
    """Decoder-only LM with learned positions and the output projection tied to the token embedding."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        d = config["ModelDimension"]
        sparse = effective_sparse_blocks(config)
        self.token_embedding = nn.Embedding(config["VocabularySize"], d)
        self.position_embedding = nn.Embedding(config["ContextLength"], d)
        with torch.no_grad():
            self.token_embedding.weight.normal_(0, 0.02)
            self.position_embedding.weight.normal_(0, 0.02)
        self.blocks = nn.ModuleList([
            TransformerBlock(d, config["AttentionHeads"], create_feed_forward(config, config.get("FeedForward", "Peer") if i in sparse else "Dense"))
            for i in range(config["Layers"])])
        self.final_norm = nn.LayerNorm(d)

    def forward(self, tokens):
        """tokens [B, T] (int64) -> next-token logits [B, T, V]."""
        time = tokens.shape[1]
        if time > self.config["ContextLength"]:
            raise ValueError(f"Sequence length {time} exceeds the model's context length {self.config['ContextLength']}")
        h = self.token_embedding(tokens) + self.position_embedding(torch.arange(time, device=tokens.device))
        for block in self.blocks:
            h = block(h)
        return torch.matmul(self.final_norm(h), self.token_embedding.weight.t())


class TransformerTextClassifier(nn.Module):
    """Encoder classifier: masked bidirectional blocks, mean pooling over real tokens, linear head; without blocks a
    bag of embeddings through one pre-norm residual feed-forward (TransformerTextClassifier.cs; no token dropout)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        d = config["ModelDimension"]
        sparse = effective_sparse_blocks(config)
        kind = config.get("FeedForward", "Peer")
        self.token_embedding = nn.Embedding(config["VocabularySize"], d)
        self.position_embedding = nn.Embedding(config["ContextLength"], d)
        with torch.no_grad():
            self.token_embedding.weight.normal_(0, 0.02)
            self.position_embedding.weight.normal_(0, 0.02)
        self.blocks = nn.ModuleList([
            TransformerBlock(d, config["AttentionHeads"], create_feed_forward(config, kind if i in sparse else "Dense"), causal=False)
            for i in range(config["Layers"])])
        self.final_norm = nn.LayerNorm(d)
        if config["Layers"] == 0:
            self.pooled_norm = nn.LayerNorm(d)
            self.pooled_feed_forward = create_feed_forward(config, kind)
        else:
            self.pooled_norm = self.pooled_feed_forward = None
        self.head = nn.Linear(d, config["ClassCount"])

    def forward(self, tokens):
        """tokens [B, T] (int64, padded with PaddingId) -> class logits [B, C]."""
        time = tokens.shape[1]
        if time > self.config["ContextLength"]:
            raise ValueError(f"Sequence length {time} exceeds the model's context length {self.config['ContextLength']}")
        mask = tokens.ne(self.config.get("PaddingId", 0))
        mask[:, 0] = True
        h = self.token_embedding(tokens) + self.position_embedding(torch.arange(time, device=tokens.device))
        for block in self.blocks:
            h = block(h, mask)
        h = self.final_norm(h)
        weights = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * weights).sum(1) / weights.sum(1)
        if self.pooled_feed_forward is not None:
            pooled = pooled + self.pooled_feed_forward(self.pooled_norm(pooled))
        return self.head(pooled)


def build(kind, config):
    if kind == LANGUAGE_MODEL:
        return TransformerLanguageModel(config)
    if kind == TEXT_CLASSIFIER:
        return TransformerTextClassifier(config)
    raise ValueError(f"Unknown model kind {kind!r}")


def load(path, expected_kind=None):
    """The model of a safetensors export of Microsoft.ML.Peer (or of save() below), in evaluation mode.

    Returns (model, metadata). The file must hold exactly the model's tensors, by name, dtype and shape."""
    tensors, metadata = safetensors_io.load(path)
    if "peer.model" not in metadata or "peer.config" not in metadata:
        raise ValueError(f"The safetensors file '{path}' has no 'peer.model' and 'peer.config' metadata: it is not a Microsoft.ML.Peer export")
    if metadata.get("peer.format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise ValueError(f"The safetensors file '{path}' has export format version {metadata['peer.format_version']!r}; this twin reads {FORMAT_VERSION}")
    if "peer.ensemble_size" in metadata:
        raise ValueError(f"The safetensors file '{path}' holds an ensemble of {metadata['peer.ensemble_size']} classifiers (EnsembleSize; "
                         "each model's tensors under 'members.<m>.'); the twin loads one model: export one trained with EnsembleSize = 1")
    kind = metadata["peer.model"]
    if expected_kind is not None and kind != expected_kind:
        raise ValueError(f"The safetensors file '{path}' holds a {kind!r} model, not a {expected_kind!r}")
    model = build(kind, json.loads(metadata["peer.config"]))
    state = model.state_dict()
    missing = [name for name in state if name not in tensors]
    extra = [name for name in tensors if name not in state]
    if missing or extra:
        raise ValueError(f"The safetensors file '{path}' does not match its config: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, target in state.items():
        if tensors[name].dtype != target.dtype or tuple(tensors[name].shape) != tuple(target.shape):
            raise ValueError(f"The safetensors file '{path}' holds tensor '{name}' as {tensors[name].dtype} {list(tensors[name].shape)}; "
                             f"the model needs {target.dtype} {list(target.shape)}")
    model.load_state_dict(tensors, strict=True)
    model.eval()
    return model, metadata


def save(model, path, metadata=None):
    """Writes model (TransformerLanguageModel or TransformerTextClassifier) as the C# exporter does: its state_dict,
    and its kind and config in __metadata__; extra metadata (e.g. the classifier's class names) is kept."""
    kind = LANGUAGE_MODEL if isinstance(model, TransformerLanguageModel) else TEXT_CLASSIFIER
    meta = dict(metadata or {})
    meta.update({"format": "pt", "peer.format_version": FORMAT_VERSION, "peer.model": kind,
                 "peer.writer": "peer_twin (PyTorch " + torch.__version__ + ")", "peer.config": json.dumps(model.config)})
    safetensors_io.save(path, model.state_dict(), meta)
