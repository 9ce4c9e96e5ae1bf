"""Class sums, and the ridge they choose: what a statistics head (``model/heads.py``) is computed from.

Per modality path, the sums over the examples a head was taught (float64): the Gram matrix
``G = sum h h^T``, the class sums ``C = sum h y^T`` and the class counts (``PathStatistics``). They
add up: the sums of two learners over the same features are the sums of their union.

``lambda`` is chosen at every solve by generalised cross-validation (Golub, Heath and Wahba, 1979),
which needs nothing but the statistics: with ``G = Q diag(s) Q^T`` and ``B = Q^T C``,

    RSS(l) = n - sum_ik B_ik^2 (s_i + 2 l) / (s_i + l)^2        (one-hot targets: y^T y = n)
    df(l)  = sum_i s_i / (s_i + l)
    GCV(l) = n RSS(l) / (n - df(l))^2

so the same statistics always give the same ``lambda`` (exactness and merging hold with it). It is
recorded with the head (``ridge``), and a saved head is solved again with the ``lambda`` it recorded.
A fixed ``HeadConfig.ridge`` skips the choice. ``n - sum_ik B_ik^2 (...)`` cancels catastrophically
when the expansion is wider than the examples are many (the fit can interpolate): RSS is computed as
the least-squares residual plus ``sum_ik B_ik^2 l^2 / (s_i (s_i + l)^2)`` over the non-zero
eigenvalues, which stays accurate down to the smallest ``lambda``.

Leave-one-out is only honest when examples are distinct: ESC-50 pairs each sound clip with several
photos, so the ``audio`` path would see each clip several times and GCV would choose a ridge that
memorises them. A task's examples are therefore counted once per path: rows of a path whose features
and class are bit-identical are one example there.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch.nn import functional as F

GCV_GRID = tuple(float(x) for x in np.logspace(-4, 6, 41))
"""The ridge values generalised cross-validation chooses from (absolute: features are unit-length)."""


def gcv_ridge(gram: torch.Tensor, targets: torch.Tensor, n: int, grid: tuple[float, ...] = GCV_GRID) -> float:
    """The ridge value of ``grid`` with the least generalised cross-validation error (module docstring)."""
    return gcv_choice(gram, targets, n, grid)[0]


def gcv_choice(gram: torch.Tensor, targets: torch.Tensor, n: int,
               grid: tuple[float, ...] = GCV_GRID) -> tuple[float, float]:
    """``(lambda, GCV error at lambda)``: the ridge value of ``grid`` with the least generalised
    cross-validation error, and that error (an estimate of the mean squared leave-one-out error per
    example, summed over classes). A one-value ``grid`` scores a fixed lambda."""
    s, q = torch.linalg.eigh(gram)  # ascending eigenvalues of the symmetric PSD Gram matrix
    b2 = (q.T @ targets).pow(2).sum(dim=1)  # (M,) sum over classes of B_ik^2
    keep = s > s.max().clamp_min(0.0) * 1e-10  # the column space of the features
    s, b2 = s[keep], b2[keep]
    residual = max(n - float((b2 / s).sum()), 0.0)  # least squares' residual (lambda -> 0)
    best, best_score = grid[0], float("inf")
    for lam in grid:
        rss = residual + float((b2 * lam**2 / (s * (s + lam).pow(2))).sum())
        df = float((s / (s + lam)).sum())
        if n - df <= 1e-9:
            continue
        score = n * rss / (n - df) ** 2
        if score < best_score:
            best, best_score = lam, score
    return best, best_score


def explained_share(gcv_error: float, counts: torch.Tensor) -> float:
    """``max(0, 1 - GCV / (1 - sum_k pi_k^2))``: the share of the one-hot targets' variance a head
    explains out of sample (0 for a path that predicts no better than the class shares)."""
    shares = counts.to(torch.float64) / max(int(counts.sum()), 1)
    baseline = 1.0 - float(shares.pow(2).sum())
    return max(0.0, 1.0 - gcv_error / baseline) if baseline > 0 else 0.0


def distinct_examples(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Indices (ascending) of the first of each group of rows whose features and label are bit-identical."""
    rows = torch.cat([x.detach().cpu().to(torch.float64), labels.cpu().to(torch.float64).unsqueeze(1)], dim=1)
    array = np.ascontiguousarray(rows.numpy())
    keys = array.view(np.dtype((np.void, array.dtype.itemsize * array.shape[1]))).ravel()
    _, first = np.unique(keys, return_index=True)
    return torch.from_numpy(np.sort(first))


class PathStatistics:
    """Sums over the examples of one modality path, in the head's feature space (float64)."""

    def __init__(self, width: int, classes: int = 0) -> None:
        self.gram = torch.zeros(width, width, dtype=torch.float64)  # (M, M)  sum h h^T
        self.targets = torch.zeros(width, classes, dtype=torch.float64)  # (M, K)  sum h y^T: column k sums class k
        self.counts = torch.zeros(classes, dtype=torch.int64)  # (K,)

    @property
    def classes(self) -> int:
        return int(self.counts.shape[0])

    def grow(self, classes: int) -> None:
        extra = classes - self.classes
        if extra > 0:
            m = self.gram.shape[0]
            self.targets = torch.cat([self.targets, self.targets.new_zeros(m, extra)], dim=1)
            self.counts = torch.cat([self.counts, self.counts.new_zeros(extra)])

    def add(self, h: torch.Tensor, labels: torch.Tensor) -> None:
        """``h`` (N, M) float64, ``labels`` (N,) class rows < ``classes``."""
        self.gram += h.T @ h
        onehot = F.one_hot(labels, self.classes).to(torch.float64)  # (N, K)
        self.targets += h.T @ onehot
        self.counts += onehot.sum(dim=0).to(torch.int64)

    def merged(self, other: "PathStatistics") -> "PathStatistics":
        """Sums of both (``other``'s classes follow this one's)."""
        out = PathStatistics(self.gram.shape[0], self.classes + other.classes)
        out.gram = self.gram + other.gram
        out.targets = torch.cat([self.targets, other.targets], dim=1)
        out.counts = torch.cat([self.counts, other.counts])
        return out

    @property
    def n(self) -> int:
        return int(self.counts.sum())


def copy_statistics(s: PathStatistics) -> PathStatistics:
    out = PathStatistics(s.gram.shape[0], s.classes)
    out.gram, out.targets, out.counts = s.gram.clone(), s.targets.clone(), s.counts.clone()
    return out


def summed(a: PathStatistics, b: PathStatistics) -> PathStatistics:
    """``a + b`` over as many classes as the wider of the two (both the same feature width)."""
    out = copy_statistics(a)
    out.grow(b.classes)
    other = copy_statistics(b)
    other.grow(out.classes)
    out.gram, out.targets, out.counts = out.gram + other.gram, out.targets + other.targets, out.counts + other.counts
    return out


def statistics_tensors(s: PathStatistics, prefix: str) -> dict[str, torch.Tensor]:
    """``s`` as tensors to save (the Gram matrix as its upper triangle: it is symmetric)."""
    rows, cols = torch.triu_indices(*s.gram.shape)
    return {f"{prefix}.gram_upper": s.gram[rows, cols].contiguous(), f"{prefix}.targets": s.targets.contiguous(),
            f"{prefix}.counts": s.counts.contiguous()}


def read_statistics(state: Mapping[str, torch.Tensor], prefix: str, width: int) -> PathStatistics:
    """The statistics :func:`statistics_tensors` wrote under ``prefix``."""
    s = PathStatistics(width, int(state[f"{prefix}.counts"].shape[0]))
    rows, cols = torch.triu_indices(width, width)
    s.gram[rows, cols] = state[f"{prefix}.gram_upper"].to(torch.float64)
    s.gram = s.gram + s.gram.T - torch.diag(s.gram.diagonal())
    s.targets = state[f"{prefix}.targets"].to(torch.float64).reshape(width, s.classes).clone()
    s.counts = state[f"{prefix}.counts"].to(torch.int64).clone()
    return s


__all__ = ["GCV_GRID", "PathStatistics", "copy_statistics", "read_statistics", "statistics_tensors", "summed", "distinct_examples", "explained_share", "gcv_choice",
           "gcv_ridge"]
