"""Expert tables sharded row-wise over a torch.distributed process group (gloo on CPUs, NCCL on GPUs).

Each of the W ranks owns N/W consecutive rows of every PEER/PKM expert table (rank r: rows r*N/W .. (r+1)*N/W - 1), as
TorchRec's row-wise sharding does; the rest of the model is replicated and trained data-parallel (gradients averaged
with all_reduce). A lookup is three all_to_all exchanges: each rank sends every owner the ids it needs (deduplicated), the
owners reply with the rows, and in the backward pass each requester sends the rows' gradients back to their owners, which
add them into their shard. No rank ever holds more than its shard and the rows its own tokens retrieve.
"""

import torch
import torch.distributed as dist
import torch.nn as nn

from .layers import PeerLayer, ProductKeyMemory


def _exchange(tensor, send_counts, recv_counts):
    """all_to_all_single along dim 0 with the given split sizes (lists)."""
    out = tensor.new_empty((sum(recv_counts),) + tuple(tensor.shape[1:]))
    dist.all_to_all_single(out, tensor.contiguous(), recv_counts, send_counts)
    return out


class _ShardedLookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, shard, ids, rows_per_rank):
        """shard [N/W, d] (this rank's rows); ids: sorted unique global row ids this rank needs -> their rows [len(ids), d]."""
        world, rank = dist.get_world_size(), dist.get_rank()
        owners = torch.div(ids, rows_per_rank, rounding_mode="floor")
        send_counts = torch.bincount(owners, minlength=world)
        recv_counts = torch.empty_like(send_counts)
        dist.all_to_all_single(recv_counts, send_counts)
        send, recv = send_counts.tolist(), recv_counts.tolist()
        local = _exchange(ids, send, recv) - rank * rows_per_rank          # the rows others (and I) want from my shard
        rows = _exchange(shard.index_select(0, local), recv, send)
        ctx.save_for_backward(local)
        ctx.counts, ctx.shard_shape = (send, recv), shard.shape
        return rows

    @staticmethod
    def backward(ctx, grad_rows):
        (local,) = ctx.saved_tensors
        send, recv = ctx.counts
        incoming = _exchange(grad_rows, send, recv)                        # every requester's gradient of my rows
        grad_shard = grad_rows.new_zeros(ctx.shard_shape).index_add_(0, local, incoming)
        return grad_shard, None, None


class ShardedEmbedding(nn.Module):
    """An embedding table of num_rows rows of which this rank holds rows_per_rank = num_rows / world (its parameter
    `weight`); forward(ids) returns the rows of any global ids, fetched from their owners."""

    def __init__(self, shard, num_rows):
        super().__init__()
        self.num_rows = num_rows
        self.rows_per_rank = shard.shape[0]
        self.weight = nn.Parameter(shard)

    def forward(self, ids):
        unique, inverse = torch.unique(ids.reshape(-1), sorted=True, return_inverse=True)
        rows = _ShardedLookup.apply(self.weight, unique, self.rows_per_rank)
        return rows[inverse].view(*ids.shape, self.weight.shape[1])


def expert_tables(model):
    """(name, owning module, attribute) of every PEER/PKM expert table of model."""
    for name, module in model.named_modules():
        if isinstance(module, PeerLayer):
            yield f"{name}.expert_down.weight", module, "expert_down"
            yield f"{name}.expert_up.weight", module, "expert_up"
        elif isinstance(module, ProductKeyMemory):
            yield f"{name}.values.weight", module, "values"


def shard_expert_tables(model):
    """Replaces every expert table of model by this rank's rows (a ShardedEmbedding); returns the tables' names."""
    world, rank = dist.get_world_size(), dist.get_rank()
    names = []
    for name, module, attribute in list(expert_tables(model)):
        table = getattr(module, attribute)
        rows = table.weight.shape[0]
        if rows % world != 0:
            raise ValueError(f"'{name}' has {rows} rows, which {world} ranks cannot share evenly")
        per = rows // world
        shard = table.weight.detach()[rank * per:(rank + 1) * per].clone()
        setattr(module, attribute, ShardedEmbedding(shard, rows))
        names.append(name)
    return names


def is_sharded(parameter_name, sharded_names):
    return parameter_name in sharded_names


def average_replicated_gradients(model, sharded_names):
    """Data parallel: every replicated parameter's gradient is averaged over the ranks; a shard's gradient, already the
    sum over every rank's tokens, is divided by the number of ranks (the loss is the mean over ranks)."""
    world = dist.get_world_size()
    replicated = [p for n, p in model.named_parameters() if n not in sharded_names and p.grad is not None]
    if replicated:
        flat = torch.cat([p.grad.reshape(-1) for p in replicated])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for p in replicated:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
            offset += p.numel()
    for n, p in model.named_parameters():
        if n in sharded_names and p.grad is not None:
            p.grad /= world


def average_buffers(model):
    """Batch-norm running statistics (and whitening's) averaged over the ranks, which each saw their own batches."""
    world = dist.get_world_size()
    for _, buffer in model.named_buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= world


def full_state_dict(model, sharded_names):
    """The unsharded state_dict (every rank must call it; all ranks get it): shards gathered in rank order."""
    world = dist.get_world_size()
    state = {}
    for name, tensor in model.state_dict().items():
        if name in sharded_names:
            parts = [torch.empty_like(tensor) for _ in range(world)]
            dist.all_gather(parts, tensor.contiguous())
            tensor = torch.cat(parts)
        state[name] = tensor.detach().clone()
    return state
