"""Data-parallel training of a twin language model with its expert tables sharded row-wise over the ranks.

    torchrun --nproc_per_node=2 --redirects 1 --tee 1 --max-restarts 1 --module peer_twin.train_sharded \\
        --model lm.safetensors --tokens train.safetensors --eval-tokens eval.safetensors \\
        --out trained.safetensors --checkpoints ckpt/ --steps 300 --report report.json

Starts from a safetensors export of Microsoft.ML.Peer (or of the twin), trains with AdamW on windows sampled from the
token stream (each rank takes its slice of every global batch; the batch of step s depends only on the seed and s), saves
a checkpoint every --checkpoint-every steps (each rank its shard and optimizer state, then a manifest), resumes from the
last complete checkpoint when restarted, and writes the unsharded model back as safetensors for ML.NET. Rank 0 writes a
JSON report: the losses, the mean step time, the restarts, and the perplexity of the exported model on --eval-tokens.

(--redirects 1 --tee 1 work around torchrun 1.13 under Python 3.11, whose default "no redirect" setting fails to parse.)
"""

import argparse
import json
import math
import os
import signal
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import distributed, models, safetensors_io


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="safetensors export to start from")
    p.add_argument("--tokens", required=True, help="safetensors file with 'tokens', int64 [L]: the training stream")
    p.add_argument("--eval-tokens", help="safetensors file with 'tokens', int64 [L]: perplexity of the result on it")
    p.add_argument("--out", required=True, help="where the trained model is written (safetensors)")
    p.add_argument("--checkpoints", required=True, help="checkpoint folder (resumed from when it holds one)")
    p.add_argument("--report", help="JSON report written by rank 0")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=16, help="global batch (windows); divided among the ranks")
    p.add_argument("--sequence", type=int, default=0, help="window length (default: the model's context)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--fail-at-step", type=int, default=-1,
                   help="testing: rank 1 (or 0 when alone) kills itself with SIGKILL before this step on the first attempt")
    return p.parse_args(argv)


def read_tokens(path):
    tensors, _ = safetensors_io.load(path)
    tokens = tensors.get("tokens")
    if tokens is None or tokens.dtype != torch.int64 or tokens.dim() != 1:
        raise ValueError(f"'{path}' must hold a tensor 'tokens', int64 [L]")
    return tokens


def batch_of_step(tokens, step, args, sequence, rank, world):
    """The step's global batch (depends on the seed and step only), this rank's slice of it."""
    generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
    starts = torch.randint(0, tokens.numel() - sequence - 1, (args.batch,), generator=generator)
    per = args.batch // world
    mine = starts[rank * per:(rank + 1) * per]
    offsets = torch.arange(sequence + 1)
    windows = tokens[mine.unsqueeze(1) + offsets]
    return windows[:, :-1], windows[:, 1:]


def perplexity(model, tokens, context):
    """exp of the mean next-token cross-entropy over consecutive windows of the context length (float64 sum)."""
    windows = (tokens.numel() - 1) // context
    inputs = tokens[:windows * context].view(windows, context)
    targets = tokens[1:windows * context + 1].view(windows, context)
    total = 0.0
    model.eval()
    with torch.no_grad():
        for start in range(0, windows, 16):
            logits = model(inputs[start:start + 16])
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[start:start + 16].reshape(-1), reduction="sum").double().item()
    return math.exp(total / (windows * context)), windows * context


def main(argv=None):
    args = parse(argv)
    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    if args.batch % world != 0:
        raise ValueError(f"--batch {args.batch} must be a multiple of the {world} ranks")
    torch.manual_seed(args.seed)
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))

    model, metadata = models.load(args.model, expected_kind=models.LANGUAGE_MODEL)
    sharded = set(distributed.shard_expert_tables(model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    tokens = read_tokens(args.tokens)
    sequence = args.sequence or model.config["ContextLength"]

    os.makedirs(args.checkpoints, exist_ok=True)
    manifest = os.path.join(args.checkpoints, "manifest.json")
    mine = os.path.join(args.checkpoints, f"rank{rank}-of-{world}.pt")
    step, losses, resumed_from = 0, [], None
    if os.path.exists(manifest):
        with open(manifest) as f:
            saved = json.load(f)
        if saved["world"] != world:
            raise ValueError(f"the checkpoint in '{args.checkpoints}' was written by {saved['world']} ranks, not {world}")
        checkpoint = torch.load(mine)
        if checkpoint["step"] != saved["step"]:
            raise ValueError(f"rank {rank}'s checkpoint is of step {checkpoint['step']}, the manifest's of {saved['step']}")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step, losses, resumed_from = checkpoint["step"], checkpoint["losses"], checkpoint["step"]
    dist.barrier()

    step_times = []
    while step < args.steps:
        if step == args.fail_at_step and restarts == 0 and rank == min(1, world - 1):
            os.kill(os.getpid(), signal.SIGKILL)   # a rank dies mid-run; torchrun restarts the group
        started = time.perf_counter()
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / max(1, args.warmup))
        inputs, targets = batch_of_step(tokens, step, args, sequence, rank, world)
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_replicated_gradients(model, sharded)
        optimizer.step()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        losses.append(mean_loss.item() / world)
        step += 1
        step_times.append(time.perf_counter() - started)
        if step % args.checkpoint_every == 0 or step == args.steps:
            distributed.average_buffers(model)
            torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "losses": losses}, mine + ".tmp")
            os.replace(mine + ".tmp", mine)
            dist.barrier()
            if rank == 0:
                with open(manifest + ".tmp", "w") as f:
                    json.dump({"step": step, "world": world}, f)
                os.replace(manifest + ".tmp", manifest)
            dist.barrier()

    state = distributed.full_state_dict(model, sharded)
    if rank == 0:
        meta = dict(metadata)
        meta["peer.writer"] = f"peer_twin.train_sharded ({world} ranks, PyTorch {torch.__version__})"
        safetensors_io.save(args.out, state, meta)
        report = {"world": world, "steps": args.steps, "batch": args.batch, "sequence": sequence, "losses": losses,
                  "restarts": restarts, "resumed_from_step": resumed_from,
                  "mean_step_seconds": sum(step_times[5:]) / max(1, len(step_times[5:])), "timed_steps": len(step_times[5:])}
        if args.eval_tokens:
            exported, _ = models.load(args.out)
            report["eval_perplexity"], report["eval_tokens"] = perplexity(exported, read_tokens(args.eval_tokens), model.config["ContextLength"])
        if args.report:
            with open(args.report, "w") as f:
                json.dump(report, f, indent=1)
        print(json.dumps({k: v for k, v in report.items() if k != "losses"}))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
