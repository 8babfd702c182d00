"""Command line: python3 -m peer_twin logits MODEL.safetensors TOKENS.safetensors OUT.safetensors

Reads the token ids (tensor "tokens", int64 [B, T]) and writes the model's logits (tensor "logits", float32: [B, T, V]
for a language model, [B, C] for a classifier), computed in evaluation mode in float32."""

import sys

import torch

from . import models, safetensors_io


def logits(model_path, tokens_path, out_path):
    model, _ = models.load(model_path)
    tensors, _ = safetensors_io.load(tokens_path)
    if "tokens" not in tensors or tensors["tokens"].dtype != torch.int64 or tensors["tokens"].dim() != 2:
        raise ValueError(f"'{tokens_path}' must hold a tensor 'tokens', int64 [batch, time]")
    with torch.no_grad():
        out = model(tensors["tokens"])
    safetensors_io.save(out_path, {"logits": out.to(torch.float32).contiguous()}, {"peer.writer": "peer_twin " + torch.__version__})


def main(argv):
    if len(argv) == 4 and argv[0] == "logits":
        logits(*argv[1:])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
