"""Exact k-nearest-neighbour search over stored keys, as a planner calls it (64 queries, 30 times
per action).

1. One matrix product gives ``|k|^2 - 2 q.k`` for every key: ``|q - k|^2`` less a per-query
   constant (key norms computed once, on keys centred so the cancellation is small).
2. The keys are cut into blocks of ``BLOCK`` consecutive rows (consecutive transitions of an
   episode: a block is a neighbourhood). The k nearest keys lie in at most k blocks, those
   with the smallest minima, so ``k + margin`` blocks are kept per query, and ``k + margin``
   candidates among their keys: two small selections instead of one over all N keys (``topk``
   over N costs more than the product).
3. Only the candidates are scored with the exact formula ``((q - k) ** 2).sum(-1)``, ranked
   stably by row. A query whose next candidate could, within a bound on float32 rounding, be
   as near as its k-th is searched exhaustively instead (none was in the planning calls
   measured).

The result is the k nearest rows by the exact formula, ties to the lower row: what scoring every
key exactly gives. Brute force, because nothing prunes here (measured on quick-sized CupCarry and
CupPush data): a planner's queries pair a state with a sampled action, so they lie off the
stored keys, their fifth neighbour about 0.6 of the keys' spread away; a k-d tree was 3-5x
slower than the scan, and triangle bounds on k-means clusters kept 35-95% of the keys.

``IVFIndex`` is the approximate option (``index: ivf``; faiss-cpu, the ``faiss`` extra): keys
clustered by k-means into ``nlist`` lists, each query scanning its ``nprobe`` nearest lists.
Measured with the planner on quick-sized data (``benchmarks/planner_speed.py --recall``, one
thread, 2026-12-06): nlist 64, nprobe 8 cut CupCarry's 54 ms per action to 32 at recall@5
0.945 and CupPush's 89 to 31 at 0.903; nprobe 4 halves that again at recall 0.81-0.83.
"""

from __future__ import annotations

from typing import Protocol

import torch

BLOCK = 16  # consecutive stored rows per block
# float32's unit roundoff: |q - k|^2 through the expansion (and through centring) is off the
# exact formula by at most about (4 D + 10) u (|q|^2 + |k|^2); SAFETY times that is allowed
UNIT = 2.0**-24
SAFETY = 4.0


INDEXES = ("exact", "ivf")


class Index(Protocol):
    def search(self, q: torch.Tensor, k: int) -> torch.Tensor: ...


def make_index(keys: torch.Tensor, kind: str = "exact", **settings: int) -> Index:
    """An index over ``keys``: ``exact`` (settings ``chunk``, ``margin``) or ``ivf``
    (``nlist``, ``nprobe``); a clear error for anything else or for ivf without faiss."""
    if kind == "exact":
        return ExactIndex(keys, **settings)
    if kind == "ivf":
        return IVFIndex(keys, **settings)
    raise ValueError(f"unknown index {kind!r}; valid: {list(INDEXES)}")


class ExactIndex:
    """The k nearest stored keys per query, by ``((q - k) ** 2).sum(-1)``; see the module."""

    def __init__(self, keys: torch.Tensor, chunk: int = 8192, margin: int = 4):
        self.keys = keys
        self.margin = margin
        n, dim = keys.shape
        self.blocks = -(-n // BLOCK)
        self.chunk = max(1, chunk // BLOCK)  # blocks per product: bounds B x chunk floats
        self.centre = keys.mean(0) if n else keys.new_zeros(dim)
        padded = torch.zeros(self.blocks * BLOCK, dim, dtype=keys.dtype, device=keys.device)
        padded[:n] = keys - self.centre
        norms = padded.pow(2).sum(1)
        norms[n:] = torch.inf  # padding rows are infinitely far
        self.max_norm = float(norms[:n].max()) if n else 0.0
        self.rounding = SAFETY * (4 * dim + 10) * UNIT
        # per chunk of blocks, column j * c + b holds the chunk's row b * BLOCK + j: a block's
        # minimum is then an elementwise minimum of BLOCK contiguous slices (a reduction over a
        # short inner dimension is ~20x slower)
        self.parts = []  # (|k|^2 (BLOCK * c,), keys^T (D, BLOCK * c)) per chunk
        for s in range(0, self.blocks, self.chunk):
            rows = padded[s * BLOCK : (s + self.chunk) * BLOCK].view(-1, BLOCK, dim).transpose(0, 1)
            part = norms[s * BLOCK : (s + self.chunk) * BLOCK].view(-1, BLOCK).T
            self.parts.append((part.flatten(), rows.reshape(-1, dim).T.contiguous()))
        self.offsets = torch.arange(BLOCK, device=keys.device)

    def search(self, q: torch.Tensor, k: int) -> torch.Tensor:
        """Rows of the k nearest keys per query (B, min(k, N)), nearest first."""
        n = len(self.keys)
        k = min(k, n)
        qc = q - self.centre
        # |k|^2 - 2 q.k of every key, (B, BLOCK, blocks): [b, j, i] is row i * BLOCK + j
        parts = [
            torch.addmm(norms, qc, key_t, alpha=-2).view(len(q), BLOCK, -1)
            for norms, key_t in self.parts
        ]
        expanded = parts[0] if len(parts) == 1 else torch.cat(parts, 2)
        kept = min(k + self.margin, self.blocks)
        block_min, block = expanded.amin(1).topk(kept, dim=1, largest=False)
        block = block.sort(1).values
        within = expanded.gather(2, block[:, None, :].expand(-1, BLOCK, -1)).flatten(1)
        rows = (self.offsets[:, None] + block[:, None, :] * BLOCK).flatten(1)
        scored = min(k + self.margin, within.shape[1])
        near, pick = within.topk(min(scored + 1, within.shape[1]), dim=1, largest=False)
        cand = rows.gather(1, pick[:, :scored]).sort(1).values  # by row: ties to the lower
        exact = self._exact(q, cand)
        order = torch.argsort(exact, dim=1, stable=True)[:, :k]
        out = cand.gather(1, order)
        # every key not scored exactly has |k|^2 - 2 q.k >= the least of the next candidate's
        # and the last kept block's minimum: the k-th found must be nearer than that (less
        # rounding), else that query searches every key exactly
        unscored = (
            block_min[:, -1] if kept < self.blocks else torch.full_like(near[:, 0], torch.inf)
        )
        if near.shape[1] > scored:
            unscored = torch.minimum(unscored, near[:, scored])
        qn = qc.pow(2).sum(1)
        floor = unscored + qn - self.rounding * (qn + self.max_norm)
        unsure = ~(exact.gather(1, order[:, -1:])[:, 0] < floor)
        if unsure.any():
            out[unsure] = self._exhaustive(q[unsure], k)
        return out

    def _exact(self, q: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The exact squared distances (B, M) of each query to its ``rows`` (padding: inf)."""
        n = len(self.keys)
        exact = (q[:, None, :] - self.keys[rows.clamp(max=n - 1)]).pow(2).sum(-1)
        return exact.masked_fill(rows >= n, torch.inf)

    def _exhaustive(self, q: torch.Tensor, k: int) -> torch.Tensor:
        """Every key scored exactly, in chunks: the fallback of ``search``."""
        n = len(self.keys)
        step = max(1, self.chunk * BLOCK // max(len(q), 1))
        rows = torch.arange(n, device=q.device)
        parts = []
        for s in range(0, n, step):
            exact = (q[:, None, :] - self.keys[s : s + step]).pow(2).sum(-1)
            parts.append(exact)
        exact = torch.cat(parts, 1)
        order = torch.argsort(exact, dim=1, stable=True)[:, :k]
        return rows[order]


class IVFIndex:
    """Approximate k nearest keys by squared L2 (faiss ``IndexIVFFlat``); see the module.

    A query whose probed lists hold fewer than k keys is searched exactly instead, so every
    row of the answer is a stored key. Deterministic: k-means is seeded and runs on one thread.
    """

    def __init__(self, keys: torch.Tensor, nlist: int = 64, nprobe: int = 8):
        try:
            import faiss
        except ImportError as err:
            raise ImportError(
                "index: ivf needs faiss-cpu: pip install 'embodied-ood[faiss]' (or index: exact)"
            ) from err
        self.keys = keys
        self.device = keys.device
        data = keys.detach().cpu().float().contiguous().numpy()
        n, dim = data.shape
        nlist = max(1, min(nlist, n // 39 if n >= 39 else 1))  # faiss wants >= 39 keys a list
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            self._index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
            self._index.cp.seed = 0
            self._index.train(data)
            self._index.add(data)
        finally:
            faiss.omp_set_num_threads(before)
        self._index.nprobe = min(nprobe, nlist)
        self._faiss = faiss
        self._exact = ExactIndex(keys)

    def search(self, q: torch.Tensor, k: int) -> torch.Tensor:
        """Rows of (approximately) the k nearest keys per query (B, min(k, N)), nearest first."""
        k = min(k, len(self.keys))
        before = self._faiss.omp_get_max_threads()
        self._faiss.omp_set_num_threads(1)  # the planners' batches are small: threads cost
        try:
            _, rows = self._index.search(q.detach().cpu().float().contiguous().numpy(), k)
        finally:
            self._faiss.omp_set_num_threads(before)
        out = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        short = (out < 0).any(1)
        if short.any():
            out[short] = self._exact.search(q[short], k)
        return out
