"""How a learner's head is configured (``LearnerConfig.head``): its kind, what it reads, its expansion,
ridge and ``unknown`` thresholds. model/heads.py says what each setting does."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HEAD_KINDS = ("analytic", "class-means", "prototypes")
HEAD_FUSE = ("weighted", "av")
"""How a statistics head scores a pair with both inputs (module docstring)."""
HEAD_FEATURES = ("frozen", "adapted", "both")
"""What a statistics head reads: the frozen encoders' own outputs, the adapted features (through the
experts, the projections and the fusion module), or both side by side (APER's [frozen, adapted])."""


@dataclass(frozen=True)
class HeadConfig:
    """Which head a learner scores with, and how a statistics head is built.

    ``kind``: one of ``HEAD_KINDS``; ``None`` takes the strategy's own (``Strategy.head_kind``).
    ``features``: one of ``HEAD_FEATURES``; ``None`` takes the strategy's own (``Strategy.head_features``).
    ``expansion``: M, the width of the fixed random ReLU expansion of the analytic head (0: ridge on
    the features themselves; ``None``: the strategy's, ``Strategy.head_expansion``). ``seed``: the expansion's seed (the matrix is regenerated from it on
    load and checked against a stored digest, so it costs no disk). ``ridge``: a fixed lambda, or
    ``None`` to choose it by generalised cross-validation at every solve. ``min_examples_per_class``:
    fewer examples of a new class is an error. ``unknown_quantile``, ``max_unknown_margin``: see the
    module docstring.
    """

    kind: str | None = None
    features: str | None = None
    expansion: int | None = None
    seed: int = 0
    ridge: float | None = None
    min_examples_per_class: int = 2
    unknown_quantile: float = 0.05
    max_unknown_margin: float = 0.5
    fuse: str = "weighted"

    def __post_init__(self) -> None:
        if self.fuse not in HEAD_FUSE:
            raise ValueError(f"head.fuse: one of {list(HEAD_FUSE)}, got {self.fuse!r}")
        if self.kind is not None and self.kind not in HEAD_KINDS:
            raise ValueError(f"head.kind: one of {list(HEAD_KINDS)} or None, got {self.kind!r}")
        if self.features is not None and self.features not in HEAD_FEATURES:
            raise ValueError(f"head.features: one of {list(HEAD_FEATURES)} or None, got {self.features!r}")
        if self.expansion is not None and self.expansion < 0:
            raise ValueError(f"head.expansion: must be >= 0, got {self.expansion}")
        if self.ridge is not None and not (self.ridge > 0 and np.isfinite(self.ridge)):
            raise ValueError(f"head.ridge: must be a positive number or None, got {self.ridge}")
        if self.min_examples_per_class < 1:
            raise ValueError(f"head.min_examples_per_class: must be >= 1, got {self.min_examples_per_class}")
        if not 0.0 <= self.max_unknown_margin <= 1.0:
            raise ValueError(f"head.max_unknown_margin: must lie in [0, 1], got {self.max_unknown_margin}")
        if not 0.0 <= self.unknown_quantile < 0.5:
            raise ValueError(f"head.unknown_quantile: must lie in [0, 0.5), got {self.unknown_quantile}")


__all__ = ["HEAD_FEATURES", "HEAD_FUSE", "HEAD_KINDS", "HeadConfig"]
