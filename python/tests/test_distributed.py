"""Row-sharded expert tables against the unsharded model: 2 gloo processes on this machine (needs python3-torch)."""

import os
import tempfile
import unittest

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from peer_twin import distributed, models

CONFIG = dict(VocabularySize=24, ContextLength=16, ModelDimension=32, Layers=2, AttentionHeads=2, FeedForward="Peer",
              Peer=dict(Experts=64, Heads=2, TopK=4, KeyDimension=8, QueryBatchNorm=True))


def loss_and_gradients(model, tokens):
    logits = model(tokens[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    model.zero_grad()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def worker(rank, world, init_file, folder):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = models.TransformerLanguageModel(CONFIG).eval()    # evaluation mode: BN by running statistics, the same on every split
    tokens = torch.randint(0, 24, (8, 17), generator=torch.Generator().manual_seed(1))
    reference_loss, reference = loss_and_gradients(model, tokens)
    original = {n: t.clone() for n, t in model.state_dict().items()}
    sharded = set(distributed.shard_expert_tables(model))
    per = tokens.shape[0] // world
    loss, _ = loss_and_gradients(model, tokens[rank * per:(rank + 1) * per])
    distributed.average_replicated_gradients(model, sharded)
    dist.all_reduce(loss)
    gathered = {}
    for name, p in model.named_parameters():
        grad = p.grad
        if name in sharded:
            parts = [torch.empty_like(grad) for _ in range(world)]
            dist.all_gather(parts, grad)
            grad = torch.cat(parts)
        gathered[name] = grad
    full = distributed.full_state_dict(model, sharded)
    if rank == 0:
        worst = max((gathered[n] - reference[n]).abs().max().item() for n in reference)
        torch.save({"loss": (loss / world - reference_loss).abs().item(), "gradient": worst, "sharded": sorted(sharded),
                    "table_gradient_norm": min(reference[n].norm().item() for n in sharded),
                    "gathered_state_is_original": all(torch.equal(full[n], original[n]) for n in original)},
                   os.path.join(folder, "result.pt"))
    dist.destroy_process_group()


class ShardedTablesTests(unittest.TestCase):
    def test_two_ranks_give_the_unsharded_loss_and_gradients(self):
        with tempfile.TemporaryDirectory() as folder:
            mp.spawn(worker, args=(2, os.path.join(folder, "init"), folder), nprocs=2, join=True)
            result = torch.load(os.path.join(folder, "result.pt"))
        self.assertEqual(result["sharded"], ["blocks.1.feed_forward.expert_down.weight", "blocks.1.feed_forward.expert_up.weight"])
        self.assertLess(result["loss"], 1e-6)
        self.assertGreater(result["table_gradient_norm"], 1e-3)   # the tables' gradients are not trivially zero
        self.assertLess(result["gradient"], 1e-6)
        self.assertTrue(result["gathered_state_is_original"])


if __name__ == "__main__":
    unittest.main()
