"""The feed-forward layers of Microsoft.ML.Peer in PyTorch, module for module and name for name (src/Microsoft.ML.Peer/Layers).

Every module and parameter has the name TorchSharp gives it, so state_dict() here and there list the same tensors.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# QueryWhitening.RelativeRidge and its running-statistics momentum.
WHITENING_RELATIVE_RIDGE = 1e-3
WHITENING_MOMENTUM = 0.1


def _sanitise(x):
    """NaN ranks as -inf, as in Peer.Native's top-k."""
    return torch.where(torch.isnan(x), torch.full_like(x, -math.inf), x)


def product_key_topk(s1, s2, k):
    """Exact top-k over the n*n sums s1[a] + s2[b] of each row (key index a*n + b): scores descending, ties broken by
    the smaller key index, NaN ranking as -inf. The same selection as Peer.Native's peer_product_key_topk_f32 (and as
    brute force over all n*n keys).

    s1, s2: [R, n]. Returns (a, b) index tensors [R, k] (the selected keys' halves), without gradient.

    Candidates per half are the top k of that half plus every entry within delta of its k-th score, where delta bounds
    how far float rounding of a sum can merge two entries (Peer.Native's collapse_width): a superset of what the exact
    kernel keeps, so the best k of the candidate sums are the best k of all n*n sums.
    """
    with torch.no_grad():
        rows, n = s1.shape
        c1, c2 = _sanitise(s1), _sanitise(s2)
        v1, i1 = torch.sort(c1, dim=1, descending=True, stable=True)
        v2, i2 = torch.sort(c2, dim=1, descending=True, stable=True)
        m1 = m2 = n
        if k < n:
            finite_max = lambda v: torch.where(torch.isfinite(v), v.abs(), torch.full_like(v, math.inf)).amax(dim=1)
            delta = (finite_max(c1) + finite_max(c2)) * 2.0 ** -20  # [R]
            m1 = max(k, int((v1 >= (v1[:, k - 1] - delta).unsqueeze(1)).sum(dim=1).max()))
            m2 = max(k, int((v2 >= (v2[:, k - 1] - delta).unsqueeze(1)).sum(dim=1).max()))
        sums = _sanitise(v1[:, :m1].unsqueeze(2) + v2[:, :m2].unsqueeze(1)).reshape(rows, -1)
        keys = (i1[:, :m1].unsqueeze(2) * n + i2[:, :m2].unsqueeze(1)).reshape(rows, -1)
        # Ascending key index first, then a stable descending sort by score: equal scores keep the smaller index first.
        order = keys.argsort(dim=1)
        sums, keys = sums.gather(1, order), keys.gather(1, order)
        _, best = torch.sort(sums, dim=1, descending=True, stable=True)
        chosen = keys.gather(1, best[:, :k])
        return torch.div(chosen, n, rounding_mode="floor"), chosen.remainder(n)


class ProductKeyRetriever(nn.Module):
    """Exact top-k over N = n^2 product keys (ProductKeyRetriever.cs). sub_keys: [2, n, d_key/2]."""

    def __init__(self, sub_keys, key_dimension, top_k, normalize_sub_keys=False):
        super().__init__()
        self.n, self.k, self.half = sub_keys, top_k, key_dimension // 2
        self.normalize_sub_keys = normalize_sub_keys
        self.sub_keys = nn.Parameter(torch.randn(2, sub_keys, self.half) / math.sqrt(self.half))

    def forward(self, queries):
        """queries [T, h, d_key] -> scores [T, h, k] (descending, differentiable) and indices [T, h, k] (int64)."""
        tokens, heads, _ = queries.shape
        keys = F.normalize(self.sub_keys, p=2.0, dim=-1) if self.normalize_sub_keys else self.sub_keys
        q1, q2 = queries.split(self.half, dim=-1)
        s1 = torch.matmul(q1, keys[0].t()).reshape(-1, self.n)
        s2 = torch.matmul(q2, keys[1].t()).reshape(-1, self.n)
        a, b = product_key_topk(s1, s2, self.k)
        scores = s1.gather(1, a) + s2.gather(1, b)
        return scores.view(tokens, heads, self.k), (a * self.n + b).view(tokens, heads, self.k)


class QueryWhitening(nn.Module):
    """ZCA whitening of each head's query (QueryWhitening.cs): batch statistics in training, running ones in evaluation."""

    def __init__(self, groups, group_size):
        super().__init__()
        self.groups, self.group_size = groups, group_size
        features = groups * group_size
        self.weight = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_covariance", torch.eye(group_size).expand(groups, group_size, group_size).contiguous())

    def _statistics(self, q, unbiased):
        q = q.to(torch.float64)
        mean = q.mean(dim=0)
        centred = (q - mean).view(-1, self.groups, self.group_size).transpose(0, 1)
        return mean, torch.matmul(centred.transpose(1, 2), centred) / (q.shape[0] - (1 if unbiased else 0))

    @staticmethod
    def _inverse_square_root(covariance):
        c = covariance.to(torch.float64)
        ridge = c.diagonal(dim1=1, dim2=2).mean(dim=1, keepdim=True).clamp_min(1e-12) * WHITENING_RELATIVE_RIDGE
        values, vectors = torch.linalg.eigh(c)
        scale = (values.clamp_min(0) + ridge).rsqrt()
        return torch.matmul(vectors * scale.unsqueeze(1), vectors.transpose(1, 2))

    def forward(self, queries):
        with torch.no_grad():
            if self.training and queries.shape[0] > 1:
                mean, covariance = self._statistics(queries.detach(), unbiased=False)
                _, unbiased = self._statistics(queries.detach(), unbiased=True)
                self.running_mean.mul_(1 - WHITENING_MOMENTUM).add_(mean.to(self.running_mean.dtype), alpha=WHITENING_MOMENTUM)
                self.running_covariance.mul_(1 - WHITENING_MOMENTUM).add_(unbiased.to(self.running_covariance.dtype), alpha=WHITENING_MOMENTUM)
            else:
                mean, covariance = self.running_mean.clone(), self.running_covariance.clone()
            whitening = self._inverse_square_root(covariance).to(queries.dtype)
        centred = (queries - mean.to(queries.dtype)).view(-1, self.groups, self.group_size).transpose(0, 1)
        white = torch.matmul(centred, whitening).transpose(0, 1).reshape(queries.shape[0], -1)
        return white * self.weight + self.bias


def _batch_norm(norm, rows):
    """Query (or input) batch norm; a training batch of one row uses the running statistics (ProductKeyRouter.NormalizeQueries)."""
    if not norm.training or rows.shape[0] > 1:
        return norm(rows)
    norm.eval()
    try:
        return norm(rows)
    finally:
        norm.train()


class ProductKeyRouter(nn.Module):
    """q = BN(W x + c), split into heads, exact product-key top-k, router weights (ProductKeyRouter.cs)."""

    def __init__(self, input_dimension, options):
        super().__init__()
        self.heads, self.key_dimension = options["Heads"], options["KeyDimension"]
        self.score_activation = options.get("ScoreActivation", "Softmax")
        whitening = options.get("QueryWhitening", False)
        query = self.heads * self.key_dimension
        self.input_norm = nn.BatchNorm1d(input_dimension) if options.get("InputBatchNorm", False) else None
        self.query = nn.Linear(input_dimension, query)
        self.query_norm = nn.BatchNorm1d(query) if options.get("QueryBatchNorm", True) and not whitening else None
        self.query_whitening = QueryWhitening(self.heads, self.key_dimension) if whitening else None
        n = int(round(math.sqrt(options["Experts"])))
        self.retriever = ProductKeyRetriever(n, self.key_dimension, options["TopK"], options.get("NormalizeSubKeys", False))

    def forward(self, tokens):
        x = tokens
        if self.input_norm is not None:
            x = _batch_norm(self.input_norm, x)
        q = self.query(x)
        if self.query_norm is not None:
            q = _batch_norm(self.query_norm, q)
        if self.query_whitening is not None:
            q = self.query_whitening(q)
        scores, indices = self.retriever(q.view(tokens.shape[0], self.heads, self.key_dimension))
        if self.score_activation == "Softmax":
            gates = F.softmax(scores, dim=-1)
        elif self.score_activation == "Sigmoid":
            gates = torch.sigmoid(scores)
        else:
            raise ValueError(f"Unknown ScoreActivation {self.score_activation!r}")
        return gates, indices


class PeerLayer(nn.Module):
    """PEER: y = sum over heads and top-k of g_j * act(u_i . x) * v_i (PeerLayer.cs, the composed reference)."""

    def __init__(self, dimension, options):
        super().__init__()
        self.dimension = dimension
        self.activation = options.get("ExpertActivation", "Gelu")
        if self.activation not in ("Gelu", "Relu"):
            raise ValueError(f"Unknown ExpertActivation {self.activation!r}")
        precision = options.get("ExpertTablePrecision", "Float32")
        if precision not in ("Float32", "BFloat16"):
            raise ValueError(f"Unknown ExpertTablePrecision {precision!r}")
        self.router = ProductKeyRouter(dimension, options)
        self.expert_down = nn.Embedding(options["Experts"], dimension)
        self.expert_up = nn.Embedding(options["Experts"], dimension)
        with torch.no_grad():
            self.expert_down.weight.normal_(0, 1.0 / math.sqrt(dimension))
            self.expert_up.weight.normal_(0, 1.0 / math.sqrt(dimension))
        if precision == "BFloat16":  # tables stored in bfloat16, rows widened exactly to compute in fp32, as ours
            self.expert_down.to(torch.bfloat16)
            self.expert_up.to(torch.bfloat16)

    def experts(self, x, gates, indices):
        """x [T, d], gates and indices [T, h*k] -> [T, d]. Overridden by the row-sharded layer in peer_twin.distributed."""
        u = self.expert_down(indices).float()
        hidden = torch.bmm(u, x.unsqueeze(-1)).squeeze(-1)
        hidden = F.gelu(hidden) if self.activation == "Gelu" else F.relu(hidden)
        v = self.expert_up(indices).float()
        return torch.bmm((hidden * gates).unsqueeze(1), v).squeeze(1)

    def forward(self, inputs):
        x = inputs.reshape(-1, self.dimension)
        gates, indices = self.router(x)
        tokens = x.shape[0]
        return self.experts(x, gates.view(tokens, -1), indices.view(tokens, -1)).view(inputs.shape)


class ProductKeyMemory(nn.Module):
    """PKM: y = sum over heads and top-k of g_j v_i (ProductKeyMemory.cs)."""

    def __init__(self, dimension, options):
        super().__init__()
        self.dimension = dimension
        self.router = ProductKeyRouter(dimension, options)
        self.values = nn.Embedding(options["Experts"], dimension)
        with torch.no_grad():
            self.values.weight.normal_(0, 1.0 / math.sqrt(dimension))

    def forward(self, inputs):
        x = inputs.reshape(-1, self.dimension)
        gates, indices = self.router(x)
        tokens = x.shape[0]
        v = self.values(indices.view(tokens, -1))
        return torch.bmm(gates.view(tokens, 1, -1), v).squeeze(1).view(inputs.shape)


class DenseFeedForward(nn.Module):
    """W2 GELU(W1 x) (DenseFeedForward.cs)."""

    def __init__(self, dimension, hidden):
        super().__init__()
        self.up = nn.Linear(dimension, hidden)
        self.down = nn.Linear(hidden, dimension)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


class MixtureOfExpertsFeedForward(nn.Module):
    """Token-choice top-k MoE with renormalised weights (MixtureOfExpertsFeedForward.cs; no auxiliary loss here)."""

    def __init__(self, dimension, hidden, experts, top_k):
        super().__init__()
        self.dimension, self.top_k = dimension, top_k
        self.gate = nn.Linear(dimension, experts, bias=False)
        self.experts = nn.ModuleList([DenseFeedForward(dimension, hidden) for _ in range(experts)])

    def forward(self, inputs):
        x = inputs.reshape(-1, self.dimension)
        probabilities = F.softmax(self.gate(x), dim=-1)
        top_weights, top_experts = probabilities.topk(self.top_k, dim=-1)
        top_weights = top_weights / top_weights.sum(-1, keepdim=True)
        output = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            slots = top_experts.eq(e)
            rows = slots.any(-1).nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            weight = (top_weights * slots).sum(-1).index_select(0, rows).unsqueeze(-1)
            output = output.index_add(0, rows, expert(x.index_select(0, rows)) * weight)
        return output.view(inputs.shape)
