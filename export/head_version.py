"""A version served as its head over its base's compiled features: swapped in at commit, never compiled.

    base = BaseGraphs.load(folder, threads)                 # once per base (serving/base.py)
    version = HeadVersion.build(learner, base)              # milliseconds: the head's arrays, checked
    version.predict(samples, top_k=5)                       # what learner.predict answers

A learner whose head reads the frozen encoders' own features (``HeadConfig.features == "frozen"``,
the default ``mcil``, ``ranpac``, ``simplecil``) computes every version's features the same way, so a
version is its head: :func:`served_head` takes its arrays (``serving/head.py``) and
:func:`check_head` compares them with the learner's own head on probe features (to ``HEAD_TOLERANCE``)
before the version is served. Over a base that holds its audio encoder (``lite``), a Classify runs
without PyTorch from the raw inputs to the answer (``serving/features.py``); over one that does not
(the CLIP family), the learner prepares the inputs and runs the audio encoder, and the base's graph
computes the image features.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from export.errors import CompileError
from model.samples import Prediction, check_top_k, rank
from serving.errors import HeadDataError
from serving.features import BaseFeatures
from serving.head import PATHS, ServedHead, unit_features

if TYPE_CHECKING:
    from model.learner import Learner
    from model.samples import Sample
    from serving.base import BaseGraphs

HEAD_TOLERANCE = 1e-6
"""Largest difference allowed between the served head's scores and the learner's, relative to the
largest score (scores are about 1 for the answer)."""
PROBES = 16


def head_problem(learner: "Learner", base_on_gpu: bool = False) -> str:
    """Why ``learner``'s versions cannot be served as a head over a base, or ``""``; ``base_on_gpu``:
    the base's graphs run on a GPU (``server.base_device``), where a learner on a GPU is served too."""
    head = learner.head
    if head is None or head.kind not in ("analytic", "class-means"):
        return f"strategy {learner.strategy_name!r} scores with text prototypes, not a statistics head"
    if learner.config.head.features != "frozen":
        return (f"its head reads {learner.config.head.features!r} features, which change with the version; "
                "only heads over the frozen encoders' features are served over a base")
    if not learner.strategy.compiles:
        return f"strategy {learner.strategy_name!r} computes its features with a network of its own"
    if learner.device.type != "cpu" and not base_on_gpu:
        return (f"the base's graph runs on the CPU and the learner is on {learner.device} "
                "(server.base_device serves it on the GPU)")
    if not learner.classes:
        return "no classes learned yet"
    return ""


def served_head(learner: "Learner", base_on_gpu: bool = False, base: str = "") -> ServedHead:
    """The learner's head as arrays, over the base of digest ``base`` when given. Raises
    :class:`CompileError` when it has none to serve."""
    problem = head_problem(learner, base_on_gpu)
    if problem:
        raise CompileError("head", problem)
    head = learner.head
    assert head is not None

    def array(t: torch.Tensor | None) -> np.ndarray:
        assert t is not None
        return np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32, copy=False))

    return ServedHead(kind=head.kind, classes=tuple(learner.classes), input_dims=dict(head.input_dims),
                      expansions={p: None if e is None else array(e) for p, e in ((q, head.expansions[q]) for q in PATHS)},
                      weights={p: array(w) for p, w in head.weights.items()},
                      thresholds={p: array(t) for p, t in head.thresholds.items()},
                      mix=dict(head.fusion_weights()), base=base,
                      source=f"learner of {len(learner.classes)} classes")


def check_head(learner: "Learner", served: ServedHead, probes: int = PROBES) -> float:
    """Scores seeded random unit features on every path with both heads; returns the largest relative
    difference, or raises :class:`CompileError` when it exceeds ``HEAD_TOLERANCE`` (or the classes,
    the paths' weights or a pair's mix differ)."""
    head = learner.head
    assert head is not None
    if list(served.classes) != learner.classes:
        raise CompileError("head.classes", f"{list(served.classes)} served, the learner has {learner.classes}")
    if set(served.weights) != set(head.weights) or served.mix != head.fusion_weights():
        raise CompileError("head.paths", "the served head weighs other paths than the learner's")
    rng = np.random.Generator(np.random.PCG64(0))
    worst = 0.0
    for p in PATHS:
        x = unit_features([rng.standard_normal((probes, served.input_dims[p]), dtype=np.float32)])
        want = head.scores(torch.from_numpy(x).to(learner.device), p).cpu().numpy()
        got = served.scores(x, p)
        scale = max(float(np.abs(want).max(initial=0.0)), 1e-12)
        worst = max(worst, float(np.abs(got - want).max(initial=0.0)) / scale)
        thresholds = head.thresholds[p].cpu().numpy()
        if not np.array_equal(served.thresholds[p], thresholds):
            raise CompileError(f"head.thresholds.{p}", "differ from the learner's")
    if not worst <= HEAD_TOLERANCE:
        raise CompileError("head.scores", f"the served head differs from the learner's by {worst:g} "
                           f"(relative; tolerance {HEAD_TOLERANCE:g})")
    return worst


class HeadVersion:
    """A committed version served as its head over the base's image graph (module docstring)."""

    def __init__(self, learner: "Learner", base: "BaseGraphs", head: ServedHead, largest_difference: float) -> None:
        self.learner = learner
        self.base = base
        self.head = head
        self.largest_difference = largest_difference  # what check_head measured
        self.broken = ""  # why serving failed once (the server then uses the learner)
        self.features = BaseFeatures(base) if base.has_audio else None  # raw inputs -> features, no PyTorch

    @classmethod
    def build(cls, learner: "Learner", base: "BaseGraphs", digest: str | None = None) -> "HeadVersion":
        """The learner's head, checked against it, over ``base``; ``digest``: the learner's base digest
        when the caller knows it (``export.base.base_digest``, tens of ms for ``lite``). Raises
        :class:`CompileError`."""
        from export.base import base_digest

        try:
            head = served_head(learner, base.placement.on_gpu, base.digest).placed(base.placement)
        except HeadDataError as exc:
            raise CompileError(exc.field, exc.problem) from None
        if base.digest != (digest or base_digest(learner.backbone)):
            raise CompileError("base.digest", f"the base's graph is of base {base.digest[:12]}, the learner "
                               "computes its image features with another encoder")
        return cls(learner, base, head, check_head(learner, head))

    @property
    def classes(self) -> list[str]:
        return list(self.head.classes)

    def predict(self, samples: Sequence["Sample"], top_k: int = 5) -> list[Prediction]:
        """Top-k classes for each sample, as :meth:`model.learner.Learner.predict` answers them."""
        check_top_k(top_k)
        if self.features is not None:
            scores, paths, unknown = self.head.judge(self.features.of(samples))  # InvalidInputError names a field
        else:
            scores, paths, unknown = self._judge_with_learner(samples)
        # model.samples.rank, as the learner ranks: the same order where scores tie (clamped to 0)
        return rank(torch.from_numpy(scores), torch.from_numpy(paths), torch.from_numpy(unknown),
                    self.classes, top_k, normalise=False)

    def _judge_with_learner(self, samples: Sequence["Sample"]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The head's verdicts, the learner preparing the inputs and running the audio encoder."""
        batch = self.learner.encode_inputs(samples)
        n = len(batch)
        image = np.full((n, self.base.feature_dim), np.nan, dtype=np.float32)
        rows = batch.has_image.cpu().numpy()
        if rows.any():
            image[rows] = self.base.image_features(batch.images.cpu().numpy()[rows])
        audio = batch.audio.detach().cpu().numpy().astype(np.float32)
        audio[~batch.has_audio.cpu().numpy()] = np.nan
        return self.head.judge({"visual": image, "audio": audio})
