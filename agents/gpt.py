"""A small GPT-style causal decoder with a key/value cache, for the ``transformer`` world model.

Pre-norm blocks (LayerNorm, multi-head self-attention through torch's
``scaled_dot_product_attention``, LayerNorm, a 4x GELU MLP), each a residual branch. There is
no positional embedding (NoPE, Kazemnejad et al. 2023): the causal mask alone lets a decoder
tell earlier tokens from later ones, the physics a transition reveals does not depend on when
in the episode it happened, and a cache is then valid at any episode length, with no position
the training data never reached.

A ``Cache`` holds every layer's keys and values of the tokens seen so far. ``GPT.forward`` with
a cache attends to them plus the new tokens and appends the new tokens' keys and values, so a
sequence fed one token at a time gives the same outputs as fed whole (the tests check it).

``GPT.branch`` continues one shared prefix (a one-row ``Cache``: the episode so far) in N ways
at once, a token per call: each continuation's own tokens go to a ``Branches`` cache, and each
query attends to the prefix's keys in place, one matrix product per layer for all N (never
copied into N rows), and to its own earlier tokens, both sets of scores in one softmax: the
same outputs as N copies of the prefix each extended, without the copies or N small attention
products over them (the planner's candidates: ``TransformerModel.rollout``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from embodied.agents.nets import Chain


class Cache:
    """Keys and values (B, heads, capacity, head_dim) per layer; the first ``length`` are filled."""

    head_major = False  # Branches: (heads, B, capacity, head_dim)

    def __init__(
        self,
        layers: int,
        batch: int,
        heads: int,
        head_dim: int,
        capacity: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        lead = (heads, batch) if self.head_major else (batch, heads)
        shape = (*lead, max(capacity, 1), head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.length = 0

    @property
    def batch(self) -> int:
        return self.keys[0].shape[1 if self.head_major else 0]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def reserve(self, extra: int) -> None:
        """Room for ``extra`` more tokens (buffers at least doubled when they grow)."""
        need = self.length + extra
        if need <= self.capacity:
            return
        size = max(need, 2 * self.capacity)
        for buffers in (self.keys, self.values):
            for i, old in enumerate(buffers):
                new = old.new_zeros(*old.shape[:2], size, old.shape[3])
                new[:, :, : self.length] = old[:, :, : self.length]
                buffers[i] = new


class Branches(Cache):
    """The continuations' own tokens for ``GPT.branch``: head-major (heads, N, capacity,
    head_dim), so that one matrix product per head meets all N queries with the prefix's keys."""

    head_major = True


def visible(queries: range, keys: range, window: int | None, device: torch.device) -> torch.Tensor:
    """(Q, K) bool: which key positions each query position attends to: itself and the ones
    before it, the last ``window`` positions at most (None: all)."""
    q = torch.arange(queries.start, queries.stop, device=device)[:, None]
    k = torch.arange(keys.start, keys.stop, device=device)[None, :]
    seen = k <= q
    return seen if window is None else seen & (k > q - window)


class Block(nn.Module):
    """One pre-norm decoder block: causal self-attention, then an MLP, each residual."""

    def __init__(self, dim: int, heads: int, window: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.window = heads, window
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Chain(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor, int] | None
    ) -> torch.Tensor:
        """x (B, T, dim). ``past`` (keys, values, length): the layer's cache buffers, into which
        the new keys and values are written at [length, length + T); None: no cache."""
        b, t, d = x.shape
        qkv = self.qkv(self.norm1.forward(x)).view(b, t, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, T, head_dim)
        if past is None:
            if self.window is None or self.window >= t:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                mask = visible(range(t), range(t), self.window, x.device)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            keys, values, n = past
            keys[:, :, n : n + t] = k
            values[:, :, n : n + t] = v
            lo = 0 if self.window is None else max(0, n + 1 - self.window)  # first key seen
            mask = None  # one new token sees every key from lo on
            if t > 1:
                mask = visible(range(n, n + t), range(lo, n + t), self.window, x.device)
            y = F.scaled_dot_product_attention(
                q, keys[:, :, lo : n + t], values[:, :, lo : n + t], attn_mask=mask
            )
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2.forward(x))

    def branch(
        self,
        x: torch.Tensor,
        prefix: tuple[torch.Tensor, torch.Tensor, int] | None,
        own: tuple[torch.Tensor, torch.Tensor, int],
    ) -> torch.Tensor:
        """One token x (N, dim) for each of N continuations. ``prefix`` (keys, values, length):
        the layer's shared cache buffers (heads, capacity, head_dim), read in place; ``own``:
        the continuations' (heads, N, capacity, head_dim), this token written at ``length``."""
        n, d = x.shape
        hd = d // self.heads
        qkv = self.qkv.forward(self.norm1.forward(x)).view(n, 3, self.heads, hd)
        q, k, v = qkv.permute(1, 2, 0, 3)  # each (heads, N, head_dim)
        q = q * hd**-0.5
        keys, values, s = own
        keys[:, :, s] = k
        values[:, :, s] = v
        p = 0 if prefix is None else prefix[2]
        lo = 0 if self.window is None else max(0, p + s + 1 - self.window)  # first key seen
        mine = max(0, lo - p)  # the first own token seen
        scores = (q[:, :, None] * keys[:, :, mine : s + 1]).sum(-1)  # (heads, N, own seen)
        if prefix is not None and lo < p:
            shared = torch.matmul(q, prefix[0][:, lo:p].transpose(1, 2))  # (heads, N, P seen)
            weights = torch.softmax(torch.cat([shared, scores], -1), -1)
            y = torch.matmul(weights[..., : p - lo], prefix[1][:, lo:p])
            y = y + (weights[..., p - lo :, None] * values[:, :, mine : s + 1]).sum(-2)
        else:
            weights = torch.softmax(scores, -1)
            y = (weights[..., None] * values[:, :, mine : s + 1]).sum(-2)
        x = x + self.proj.forward(y.transpose(0, 1).reshape(n, d))
        return x + self.mlp.forward(self.norm2.forward(x))


class GPT(nn.Module):
    """Token vectors (B, T, in_dim) -> outputs (B, T, out_dim), each from its token and those
    before it (and a cache's); with a ``window``, each layer attends to the last ``window``
    positions at most (sliding-window attention: the cache stays exact)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        dim: int,
        layers: int,
        heads: int,
        window: int | None = None,
    ):
        super().__init__()
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 or None; got {window}")
        self.dim, self.heads = dim, heads
        self.embed = nn.Linear(in_dim, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, window) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, out_dim)

    def new_cache(self, batch: int, capacity: int) -> Cache:
        p = self.out.weight
        head_dim = self.dim // self.heads
        return Cache(len(self.blocks), batch, self.heads, head_dim, capacity, p.device, p.dtype)

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        """Without a cache: the causal outputs of the whole sequences. With one: the new
        tokens attend to the cached ones too, and are appended to it."""
        if cache is not None:
            if cache.batch != x.shape[0]:
                raise ValueError(f"a cache of {cache.batch} rows for a batch of {x.shape[0]}")
            cache.reserve(x.shape[1])
        h = self.embed(x)
        for i, block in enumerate(self.blocks):
            past = None if cache is None else (cache.keys[i], cache.values[i], cache.length)
            h = block.forward(h, past)
        if cache is not None:
            cache.length += x.shape[1]
        return self.out(self.norm.forward(h))

    def branch(self, x: torch.Tensor, prefix: Cache | None, own: Branches) -> torch.Tensor:
        """One more token x (N, in_dim) for each of N continuations of ``prefix`` (one row,
        shared; None: none) -> outputs (N, out_dim); the tokens are appended to ``own``."""
        if prefix is not None and prefix.batch != 1:
            raise ValueError(f"continuations branch from a one-row prefix, not {prefix.batch}")
        if own.batch != x.shape[0]:
            raise ValueError(f"branches of {own.batch} rows for a batch of {x.shape[0]}")
        own.reserve(1)
        h = self.embed.forward(x)
        for i, block in enumerate(self.blocks):
            shared = None
            if prefix is not None:
                shared = (prefix.keys[i][0], prefix.values[i][0], prefix.length)
            h = block.branch(h, shared, (own.keys[i], own.values[i], own.length))
        own.length += 1
        return self.out.forward(self.norm.forward(h))

    def new_branches(self, batch: int, capacity: int) -> Branches:
        p = self.out.weight
        head_dim = self.dim // self.heads
        return Branches(len(self.blocks), batch, self.heads, head_dim, capacity, p.device, p.dtype)
