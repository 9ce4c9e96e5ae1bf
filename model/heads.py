"""Classifier heads: how a learner turns features into scores over the classes it has learned.

    prototypes    cosine to text prototypes            the MCIL paper's form; scores untrained classes too
    class-means   cosine to each class's mean feature  SimpleCIL
    analytic      ridge regression over a fixed random ReLU expansion, solved from class statistics
                  (RanPAC; ACIL's recursive least squares is the same solution, computed at once)

The two statistics heads learn only by accumulating sums over the examples they are shown and
solving in closed form (float64, Cholesky), so learning a task is one forward pass and one solve:

    G += h^T h,   C += h^T y          h = relu(x W) (N, M), y one-hot (N, K)
    W_out = (G + lambda I)^-1 C        lambda chosen by generalised cross-validation (below)

This makes them exact: after T tasks the head is the one fitted once on every example seen, in any
order, and the statistics of two learners over the same frozen features add up to the head of their
union (:meth:`StatisticsHead.merge`). It stays exact only while the features of a learned class stay
what they were when its statistics were taken: whatever computes the features must stop moving.

``lambda`` is chosen at every solve by generalised cross-validation from the statistics alone, so
the same statistics give the same ``lambda``; a fixed ``HeadConfig.ridge`` skips the choice. It is
recorded (``ridge``), and a saved head is solved again with it. Examples count once per path where
their features and class are bit-identical (``model/class_sums.py`` says how, and why).

The fused answer (``HeadConfig.fuse = "weighted"``) of a pair is the weighted mean of its three paths'
scores, ``sum_p w_p s_p / sum_p w_p``, each weight the share of the target variance the path's head
explains out of sample, ``w_p = max(0, 1 - GCV_p / (1 - sum_k pi_k^2))`` (``pi_k``: the class shares on
that path; the denominator is the error of always answering the class shares). A modality that
carries no signal gets no vote; weights come from the statistics alone, so merged heads weigh alike.
``"av"`` scores a pair on the joint path alone (the behaviour of versions before this setting).
Whether a pair is ``unknown`` is judged on the joint (``av``) path's own scores either way: a
single-modality head extrapolates confidently on inputs unlike anything it was taught (noise), and
the average would inherit that confidence; the joint head, which sees both inputs together, does not.

Each modality path (``av``, ``visual``, ``audio``) has its own statistics: a pair with both inputs
counts towards all three, an image alone towards ``visual`` only. A head also keeps, per path and
class, the margin (its score minus the best other class's) below which only ``unknown_quantile`` of
that class's training examples fell when it was learned, each scored as if left out of the fit: a
sample whose best class leads the next by less than that class's threshold is reported as
``unknown`` (a class never taught should not come back as a confident known one). A threshold never
exceeds ``max_unknown_margin`` (0.5): a class whose examples are nearly alike would otherwise call
any fresh example that leads by less than almost 1 unknown.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import numpy as np
import torch
from torch.nn import functional as F

from model.class_sums import (
    GCV_GRID,
    PathStatistics,
    copy_statistics,
    distinct_examples,
    explained_share,
    gcv_choice,
    read_statistics,
    statistics_tensors,
    summed,
)
from model.errors import CheckpointError, InvalidInputError, ModelError
from model.head_config import HEAD_FEATURES, HEAD_FUSE, HEAD_KINDS, HeadConfig
from model.samples import PATHS


class SingularHeadError(ModelError, ValueError):
    """The head's linear system cannot be solved (``field`` names what is at fault)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def random_expansion(in_dim: int, width: int, seed: int) -> torch.Tensor:
    """``(in_dim, width)`` standard normal matrix from NumPy's PCG64 stream of ``seed``."""
    rng = np.random.Generator(np.random.PCG64(seed))
    return torch.from_numpy(rng.standard_normal((in_dim, width), dtype=np.float32))


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()[:16]


def fusion_weights(kind: str, config: HeadConfig, shares: Mapping[str, float]) -> dict[str, float]:
    """Per path, its weight in the answer to a pair: ``{"av": 1.0}`` unless an analytic head fuses
    ``"weighted"`` and some path explains something (module docstring)."""
    if kind != "analytic" or config.fuse != "weighted":
        return {"av": 1.0}
    total = sum(shares.values())
    if total <= 0:
        return {"av": 1.0}
    return {p: w / total for p, w in shares.items() if w > 0}


class StatisticsHead:
    """A head computed from per-path class statistics: ``analytic`` (ridge) or ``class-means``."""

    def __init__(self, kind: str, config: HeadConfig, input_dims: Mapping[str, int]) -> None:
        if kind not in ("analytic", "class-means"):
            raise ValueError(f"head.kind: {kind!r} is not a statistics head")
        self.kind = kind
        self.config = config
        self.input_dims = dict(input_dims)  # path -> feature width the learner hands over
        expand = kind == "analytic" and bool(config.expansion)
        self.expansions = {p: random_expansion(d, config.expansion or 0, config.seed + i) if expand else None
                           for i, (p, d) in enumerate(self.input_dims.items())}
        self.stats = {p: PathStatistics(self.width(p)) for p in self.input_dims}
        self.weights: dict[str, torch.Tensor] = {}  # path -> (M, K) float32, solved
        self.ridge: dict[str, float] = {}
        self.shares: dict[str, float] = {}  # path -> share of the targets' variance explained (GCV)
        self.thresholds = {p: torch.zeros(0) for p in self.input_dims}  # path -> (K,) unknown below this
        # Once sums learned elsewhere were received (``receive``; a district's other rooms,
        # service/district.py): this head's own sums and the received ones, and ``stats`` is always
        # ``own + received`` path by path. None: ``stats`` holds only this head's own examples.
        self.own: dict[str, PathStatistics] | None = None
        self.received: dict[str, PathStatistics] | None = None
        self.own_thresholds: dict[str, torch.Tensor] | None = None  # those computed here (-inf: not taught here)
        self._factors: dict[str, torch.Tensor] = {}  # path -> Cholesky factor of the last solve (not saved)

    # -- features ---------------------------------------------------------------------------------
    def width(self, path: str) -> int:
        w = self.expansions[path]
        return self.input_dims[path] if w is None else int(w.shape[1])

    def expand(self, x: torch.Tensor, path: str) -> torch.Tensor:
        """``(N, D)`` unit features (float32) -> ``(N, M)`` float64 head features, computed in float64
        (as ``serving/head.py`` computes them: the two agree to float64 rounding, not float32's)."""
        w, x = self.expansions[path], x.detach().to("cpu", torch.float32).to(torch.float64)
        return x if w is None else torch.relu(x @ w.to(torch.float64))

    @property
    def classes(self) -> int:
        return max((s.classes for s in self.stats.values()), default=0)

    # -- learning ---------------------------------------------------------------------------------
    def learn(self, features: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor], classes: int) -> None:
        """Adds the examples of a task to the statistics and solves again: examples of new classes
        ``self.classes .. classes - 1`` and of classes already learned (a domain-incremental task; an
        old class keeps its ``unknown`` threshold).

        ``features[path]``: ``(N_p, D_p)`` features of the examples that have that path's inputs;
        ``labels[path]``: their class rows. Examples of a path that are bit-identical count once there
        (module docstring). Validates everything first: on error nothing changes.
        """
        first = self.classes
        if classes < first:
            raise InvalidInputError("classes", f"{classes} classes, fewer than the {first} learned")
        expanded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        distinct: dict[str, torch.Tensor] = {}
        counts = torch.zeros(classes - first, dtype=torch.int64)
        for path, x in features.items():
            if path not in self.input_dims:
                raise InvalidInputError("features", f"unknown path {path!r}")
            y = labels[path].to("cpu", torch.int64)
            if x.ndim != 2 or x.shape[1] != self.input_dims[path] or len(x) != len(y):
                raise InvalidInputError(f"features[{path}]", f"shape {tuple(x.shape)} for {len(y)} labels, "
                                        f"expected (N, {self.input_dims[path]})")
            if not bool(torch.isfinite(x).all()):
                raise InvalidInputError(f"features[{path}]", "non-finite values (NaN or inf)")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
                raise InvalidInputError(f"labels[{path}]", f"class rows must lie in [0, {classes})")
            distinct[path] = distinct_examples(x, y)
            fresh = y[distinct[path]]
            fresh = fresh[fresh >= first] - first
            counts = torch.maximum(counts, torch.bincount(fresh, minlength=classes - first))
            expanded[path] = (self.expand(x, path), y)
        few = [first + i for i, c in enumerate(counts.tolist()) if c < self.config.min_examples_per_class]
        if few:
            raise InvalidInputError("examples", f"class row(s) {few} have fewer than "
                                    f"{self.config.min_examples_per_class} distinct examples")
        own = {p: copy_statistics(s) for p, s in self.own_statistics().items()}
        for p, s in own.items():
            s.grow(classes)
            if p in expanded:
                h, y = expanded[p]
                s.add(h[distinct[p]], y[distinct[p]])
        stats = own if self.received is None else {p: summed(own[p], self.received[p]) for p in own}
        weights, ridge, shares = self._solve_all(stats)
        try:
            thresholds = self._thresholds(stats, weights, expanded, first)
        finally:
            self._factors = {}  # only the thresholds need them; they would double a learner copy's size
        if self.own_thresholds is not None:
            self.own_thresholds = {p: torch.cat([t, thresholds[p][len(t):]]) for p, t in self.own_thresholds.items()}
        self.stats, self.weights, self.ridge, self.shares, self.thresholds = stats, weights, ridge, shares, thresholds
        if self.received is not None:
            self.own = own

    def own_statistics(self) -> dict[str, PathStatistics]:
        """The sums of the examples taught to this head itself (not those received from elsewhere)."""
        return self.stats if self.own is None else self.own

    def own_unknown_thresholds(self) -> dict[str, torch.Tensor]:
        """The thresholds computed from this head's own examples (``-inf`` for classes only received)."""
        return self.thresholds if self.own_thresholds is None else self.own_thresholds

    def receive(self, received: Mapping[str, PathStatistics], thresholds: Mapping[str, torch.Tensor]) -> None:
        """Solves from this head's own statistics plus ``received`` (sums of other learners over the
        same features, laid out over this head's class rows, as many classes as there will be), and
        takes ``thresholds`` (per path, one per class row) as the classes' unknown thresholds. Replaces
        what was received before, so receiving the same sums again gives the same head, bit for bit.
        Validates and solves first: on error nothing changes."""
        own = self.own_statistics()
        classes = max(max((s.classes for s in received.values()), default=0), self.classes)
        kept = {p: copy_statistics(s) for p, s in own.items()}
        others = {p: received[p] if p in received else PathStatistics(s.gram.shape[0], classes) for p, s in own.items()}
        for p, s in kept.items():
            s.grow(classes)
            if others[p].gram.shape != s.gram.shape or others[p].classes != classes:
                raise InvalidInputError(f"statistics.{p}", f"width {others[p].gram.shape[0]} and {others[p].classes} "
                                        f"classes, expected {s.gram.shape[0]} and {classes}")
            if p not in thresholds or thresholds[p].shape != (classes,):
                raise InvalidInputError(f"thresholds.{p}", f"expected {classes} thresholds")
        stats = {p: summed(kept[p], others[p]) for p in kept}
        weights, ridge, shares = self._solve_all(stats)
        self._factors = {}
        self.own_thresholds = {p: torch.cat([t, torch.full((classes - len(t),), float("-inf"))])
                               for p, t in self.own_unknown_thresholds().items()}
        self.own, self.received, self.stats = kept, {p: copy_statistics(s) for p, s in others.items()}, stats
        self.weights, self.ridge, self.shares = weights, ridge, shares
        self.thresholds = {p: thresholds[p].to(torch.float32).clone() for p in stats}

    def merge(self, other: "StatisticsHead") -> "StatisticsHead":
        """A head over both heads' classes (``other``'s after this one's), from their summed statistics.

        Both must be the same kind, configuration and feature widths (the same frozen features)."""
        if (other.kind, other.config, other.input_dims) != (self.kind, self.config, self.input_dims):
            raise InvalidInputError("head", "heads to merge differ in kind, configuration or feature widths")
        out = StatisticsHead(self.kind, self.config, self.input_dims)
        out.stats = {p: self.stats[p].merged(other.stats[p]) for p in self.stats}
        out.weights, out.ridge, out.shares = out._solve_all(out.stats)
        out.thresholds = {p: torch.cat([self.thresholds[p], other.thresholds[p]]) for p in self.stats}
        out._factors = {}
        return out

    def _solve_all(self, stats: dict[str, PathStatistics], ridge: Mapping[str, float] | None = None
                   ) -> tuple[dict[str, torch.Tensor], dict[str, float], dict[str, float]]:
        """``(weights, lambda, explained share)`` per path with examples; ``ridge``: the lambda to use
        per path (a saved head's), else chosen (or ``HeadConfig.ridge``)."""
        weights, lambdas, shares, self._factors = {}, {}, {}, {}
        for p, s in stats.items():
            if s.n == 0:
                continue
            fixed = ridge.get(p) if ridge is not None else self.config.ridge
            weights[p], lambdas[p], shares[p], factor = self._solve(p, s, fixed)
            if factor is not None:
                self._factors[p] = factor
        return weights, lambdas, shares

    def _solve(self, path: str, s: PathStatistics, ridge: float | None
               ) -> tuple[torch.Tensor, float, float, torch.Tensor | None]:
        """``(weights (M, K), lambda, explained share, Cholesky factor of G + lambda I or None)``."""
        if self.kind == "class-means":
            means = s.targets.T / s.counts.clamp_min(1).unsqueeze(1).to(torch.float64)  # (K, M)
            return F.normalize(means, dim=1).T.to(torch.float32).contiguous(), 0.0, 0.0, None
        lam, error = gcv_choice(s.gram, s.targets, s.n, GCV_GRID if ridge is None else (float(ridge),))
        system = s.gram + lam * torch.eye(s.gram.shape[0], dtype=torch.float64)
        factor, info = torch.linalg.cholesky_ex(system)
        if int(info) != 0 or not bool(torch.isfinite(factor).all()):
            raise SingularHeadError(f"head.{path}", f"G + {lam:g} I is not positive definite; "
                                    "the features may be degenerate")
        weights = torch.cholesky_solve(s.targets, factor).to(torch.float32).contiguous()
        return weights, lam, explained_share(error, s.counts), factor

    def _thresholds(self, stats: dict[str, PathStatistics], weights: dict[str, torch.Tensor],
                    expanded: dict[str, tuple[torch.Tensor, torch.Tensor]], first: int) -> dict[str, torch.Tensor]:
        """Old classes keep theirs; each new class gets the ``unknown_quantile`` of its own examples'
        margins under the new weights (``-inf`` where the path saw none of it: never unknown).

        The margin of a sample is its own class's score minus the best other class's. The analytic head
        scores each example as if it had been left out of the fit (the ridge leave-one-out identity
        ``s_loo = (s - h_ii y) / (1 - h_ii)``, ``h_ii = h^T (G + lambda I)^-1 h``): scores of examples the
        head was fitted on are optimistic, and a threshold from them would call unseen examples of a
        known class unknown."""
        out = {}
        for p in stats:
            new = torch.full((stats[p].classes - first,), float("-inf"))
            if p in expanded and p in weights:
                h, y = expanded[p]
                scores = self._scores_from(h, weights[p], p).double()  # (N, K)
                onehot = F.one_hot(y, scores.shape[1]).to(torch.float64)
                if p in self._factors:
                    leverage = (h * torch.cholesky_solve(h.T, self._factors[p]).T).sum(dim=1, keepdim=True)
                    scores = (scores - leverage * onehot) / (1 - leverage).clamp_min(1e-6)
                new = self._new_thresholds(scores, y, first, stats[p].classes)
            out[p] = torch.cat([self.thresholds[p], new])
        return out

    def _new_thresholds(self, scores: torch.Tensor, y: torch.Tensor, first: int, classes: int) -> torch.Tensor:
        """The thresholds of classes ``first .. classes - 1`` from their examples' (N, K) scores."""
        new = torch.full((classes - first,), float("-inf"))
        onehot = F.one_hot(y, scores.shape[1]).to(torch.float64)
        own = (scores * onehot).sum(dim=1)
        others = scores.masked_fill(onehot.bool(), float("-inf")).amax(dim=1).clamp_min(0.0)
        margin = own - others
        for c in range(first, classes):
            mine = margin[y == c]
            if len(mine):
                new[c - first] = min(float(torch.quantile(mine, self.config.unknown_quantile)),
                                     self.config.max_unknown_margin)
        return new

    # -- scoring ----------------------------------------------------------------------------------
    def _scores_from(self, h: torch.Tensor, w: torch.Tensor, path: str) -> torch.Tensor:
        if self.kind == "class-means":
            h = F.normalize(h, dim=1)
        return (h.to(torch.float64) @ w.to(torch.float64)).to(torch.float32)  # float64 sums (see expand)

    def scores(self, x: torch.Tensor, path: str) -> torch.Tensor:
        """``(B, D)`` features of ``path`` -> ``(B, K)`` scores: ridge outputs (an estimate of each
        class's indicator, about 1 for the class and 0 for the others) or cosines to class means.
        A path that has seen no example yet scores 0 everywhere."""
        if path not in self.weights:
            return x.new_zeros(len(x), self.classes)
        out = self._scores_from(self.expand(x, path), self.weights[path], path)
        return out.to(x.device)

    def fusion_weights(self) -> dict[str, float]:
        """The weight of each path's scores in the answer to a pair (they sum to 1; module docstring)."""
        return fusion_weights(self.kind, self.config, self.shares)

    def pair_scores(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(B, K)`` scores of pairs, from their features on every path ``fusion_weights`` names."""
        mix = self.fusion_weights()
        return sum((w * self.scores(x[p], p) for p, w in mix.items()), start=torch.zeros(()))

    def unknown(self, scores: torch.Tensor, path: str) -> torch.Tensor:
        """``(B,)`` bool: the margin of the best class over the next (over 0 when only one class is
        known) lies below the best class's threshold. A pair is judged on the ``av`` path's own scores
        (module docstring)."""
        scores = scores.cpu()
        best, index = scores.max(dim=1)
        second = scores.topk(2, dim=1).values[:, 1].clamp_min(0.0) if scores.shape[1] > 1 else torch.zeros_like(best)
        return (best - second) < self.thresholds[path][index]

    # -- persistence -----------------------------------------------------------------------------
    def metadata(self) -> dict[str, object]:
        return {"kind": self.kind, "input_dims": self.input_dims, "ridge": self.ridge,
                "expansion_digest": {p: digest(w) for p, w in self.expansions.items() if w is not None}}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The statistics (the Gram matrix as its upper triangle) and thresholds; weights are solved
        again on load, with the ridge values recorded in :meth:`metadata`."""
        out: dict[str, torch.Tensor] = {}
        for p, s in self.stats.items():
            if self.own is None or self.received is None:
                out.update(statistics_tensors(s, p))
            else:  # ``stats`` is their sum, computed again on load (the same bits)
                out.update(statistics_tensors(self.own[p], f"{p}.own"))
                out.update(statistics_tensors(self.received[p], f"{p}.received"))
                out[f"{p}.own.thresholds"] = self.own_unknown_thresholds()[p].contiguous()
            out[f"{p}.thresholds"] = self.thresholds[p].contiguous()
        return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor], metadata: Mapping[str, object], source: str) -> None:
        saved_dims = metadata.get("input_dims")
        if isinstance(saved_dims, dict) and {p: int(d) for p, d in saved_dims.items()} != self.input_dims:
            raise CheckpointError(source, "head.input_dims", f"learned over features of widths {saved_dims}, "
                                  f"but this backbone computes {self.input_dims}: the preset's encoders changed "
                                  "since this version was made; teach its classes again on this one")
        expected = {p: digest(w) for p, w in self.expansions.items() if w is not None}
        if metadata.get("expansion_digest", {}) != expected:
            raise CheckpointError(source, "head.expansion_digest", "the random expansion regenerated from "
                                  "its seed differs from the saved one (NumPy's stream changed?)")
        stats, own, received, own_thresholds = {}, {}, {}, {}
        for p in self.input_dims:
            try:
                if f"{p}.own.counts" in state:
                    own[p] = read_statistics(state, f"{p}.own", self.width(p))
                    received[p] = read_statistics(state, f"{p}.received", self.width(p))
                    own_thresholds[p] = state[f"{p}.own.thresholds"].to(torch.float32).clone()
                    stats[p] = summed(own[p], received[p])
                else:
                    stats[p] = read_statistics(state, p, self.width(p))
                self.thresholds[p] = state[f"{p}.thresholds"].to(torch.float32).clone()
            except (KeyError, RuntimeError) as exc:
                raise CheckpointError(source, f"head.{p}", f"missing or malformed statistics: {exc}") from None
        self.own, self.received, self.own_thresholds = (own, received, own_thresholds) if own else (None, None, None)
        recorded = metadata.get("ridge")
        ridge = ({p: float(v) for p, v in recorded.items()} if isinstance(recorded, dict) and self.kind == "analytic"
                 and set(recorded) == {p for p, s in stats.items() if s.n} else None)
        self.stats = stats
        self.weights, self.ridge, self.shares = self._solve_all(stats, ridge)
        self._factors = {}


def unit_features(parts: list[torch.Tensor]) -> torch.Tensor:
    """Each part L2-normalised, then concatenated and scaled to unit length: ``(B, sum D)``."""
    joined = torch.cat([F.normalize(p, dim=-1) for p in parts], dim=-1)
    scaled: torch.Tensor = joined / (len(parts) ** 0.5)
    return scaled


__all__ = ["HEAD_FEATURES", "HEAD_FUSE", "HEAD_KINDS", "PATHS", "HeadConfig", "SingularHeadError", "StatisticsHead",
           "fusion_weights", "random_expansion", "unit_features"]
