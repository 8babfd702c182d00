"""One PEER layer training step composed in PyTorch, as the public PyTorch implementations compose it.

The layer is peer_twin's (python/peer_twin/layers.py: the same router, product-key retrieval and experts as
Microsoft.ML.Peer's PeerLayer): the expert rows are gathered with nn.Embedding ([T, h*k, d] copies), combined with
bmm, and the tables get either sparse embedding gradients stepped by torch.optim.SparseAdam (the cheap choice in
PyTorch) or dense gradients stepped by AdamW (what most implementations do). The router always steps with AdamW.
Run by the peer-layer benchmark with the same sizes; prints one JSON object with the per-step timings.

usage: python3 pytorch_peer_step.py --experts N --dimension d --heads h --topk k --key-dimension dk --tokens T
       --steps S --threads P [--dense]
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from peer_twin.layers import PeerLayer  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    for name in ("experts", "dimension", "heads", "topk", "key-dimension", "tokens", "steps", "threads"):
        parser.add_argument("--" + name, type=int, required=True)
    parser.add_argument("--dense", action="store_true", help="dense table gradients and AdamW instead of sparse + SparseAdam")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)  # as many as the .NET side's libtorch uses
    torch.manual_seed(1)
    options = {"Experts": args.experts, "Heads": args.heads, "TopK": args.topk, "KeyDimension": args.key_dimension}
    layer = PeerLayer(args.dimension, options)
    layer.train()
    tables = [layer.expert_down.weight, layer.expert_up.weight]
    router = [p for p in layer.parameters() if all(p is not t for t in tables)]
    optimizers = [torch.optim.AdamW(router, lr=1e-3, weight_decay=0.1)]
    if args.dense:
        optimizers.append(torch.optim.AdamW(tables, lr=1e-3, weight_decay=0.1))
    else:
        layer.expert_down.sparse = True
        layer.expert_up.sparse = True
        optimizers.append(torch.optim.SparseAdam(tables, lr=1e-3))
    x = torch.randn(args.tokens, args.dimension)
    w = torch.randn(args.tokens, args.dimension)

    def step():
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        y = layer(x)
        forward = time.perf_counter()
        (y * w).sum().backward()
        backward = time.perf_counter()
        for optimizer in optimizers:
            optimizer.step()
        end = time.perf_counter()
        return {"total": (end - start) * 1e3, "forward": (forward - start) * 1e3,
                "backward": (backward - forward) * 1e3, "optimizer": (end - backward) * 1e3}

    step()  # warm-up: allocator growth, first touch of the optimizer state
    samples = [step() for _ in range(args.steps)]

    def median(key):
        values = sorted(s[key] for s in samples)
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "tables": "dense AdamW" if args.dense else "sparse SparseAdam",
        "median_ms": {key: round(median(key), 3) for key in ("total", "forward", "backward", "optimizer")},
        "samples_ms": [round(s["total"], 3) for s in samples],
    }))


if __name__ == "__main__":
    main()
