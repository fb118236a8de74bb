"""Exact k-nearest-neighbour search over stored keys, as a planner calls it (64 queries, 30 times
per action).

One matrix product gives ``|k|^2 - 2 q.k`` for every key (``|q - k|^2`` less a per-query
constant; the key norms are computed once, on keys centred so the cancellation is small), one
``topk`` keeps ``k + margin`` candidates, and only those are scored with the exact formula
``((q - k) ** 2).sum(-1)``, ranked stably by row. A query whose next candidate could, within a
bound on float32 rounding, be as near as its k-th is searched exhaustively instead (none was in
the planning calls measured). The result is the k nearest rows by the exact formula, ties to
the lower row: what scoring every key exactly gives.

Brute force, because nothing prunes here (measured on quick-sized CupCarry and CupPush data): a
planner's queries pair a state with a sampled action, so they lie off the stored keys, their
fifth neighbour about 0.6 of the keys' spread away; a k-d tree was 3-5x slower than the scan,
and triangle bounds on k-means clusters kept 35-95% of the keys.
"""

from __future__ import annotations

import torch

# float32's unit roundoff: |q - k|^2 through the expansion (and through centring) is off the
# exact formula by at most about (4 D + 10) u (|q|^2 + |k|^2); SAFETY times that is allowed
UNIT = 2.0**-24
SAFETY = 4.0


class ExactIndex:
    """The k nearest stored keys per query, by ``((q - k) ** 2).sum(-1)``; see the module."""

    def __init__(self, keys: torch.Tensor, chunk: int = 8192, margin: int = 4):
        self.keys = keys
        self.chunk = max(1, chunk)
        self.margin = margin
        n, dim = keys.shape
        self.centre = keys.mean(0) if n else keys.new_zeros(dim)
        centred = keys - self.centre
        norms = centred.pow(2).sum(1)
        self.max_norm = float(norms[:n].max()) if n else 0.0
        self.rounding = SAFETY * (4 * dim + 10) * UNIT
        self.parts = [  # (|k|^2, keys^T) per chunk of keys
            (norms[s : s + self.chunk], centred[s : s + self.chunk].T.contiguous())
            for s in range(0, n, self.chunk)
        ]

    def search(self, q: torch.Tensor, k: int) -> torch.Tensor:
        """Rows of the k nearest keys per query (B, min(k, N)), nearest first."""
        n = len(self.keys)
        k = min(k, n)
        qc = q - self.centre
        scored = min(k + self.margin, n)
        near, cand = torch.cat(
            [torch.addmm(norms, qc, key_t, alpha=-2) for norms, key_t in self.parts], 1
        ).topk(min(scored + 1, n), dim=1, largest=False)
        rows = cand[:, :scored].sort(1).values  # by row: ties go to the lower
        exact = (q[:, None, :] - self.keys[rows]).pow(2).sum(-1)
        order = torch.argsort(exact, dim=1, stable=True)[:, :k]
        out = rows.gather(1, order)
        if scored < n:
            # a key not scored exactly lies at |q - k|^2 >= the next candidate's |k|^2 - 2 q.k
            # + |q|^2 (less rounding): the k-th found must be nearer, or search every key
            qn = qc.pow(2).sum(1)
            floor = near[:, scored] + qn - self.rounding * (qn + self.max_norm)
            unsure = ~(exact.gather(1, order[:, -1:])[:, 0] < floor)
            if unsure.any():
                out[unsure] = self._exhaustive(q[unsure], k)
        return out

    def _exhaustive(self, q: torch.Tensor, k: int) -> torch.Tensor:
        """Every key scored exactly, in chunks: the fallback of ``search``."""
        n = len(self.keys)
        step = max(1, self.chunk // max(len(q), 1))
        rows = torch.arange(n, device=q.device)
        parts = []
        for s in range(0, n, step):
            exact = (q[:, None, :] - self.keys[s : s + step]).pow(2).sum(-1)
            parts.append(exact)
        exact = torch.cat(parts, 1)
        order = torch.argsort(exact, dim=1, stable=True)[:, :k]
        return rows[order]
