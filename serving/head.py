"""A version's statistics head as arrays: what turns a base's features into a ranked answer.

    head = ServedHead.load(directory)                      # head.npz + head.json, checksummed
    answers = head.answer({"visual": v, "audio": a}, top_k=5)

A version made by the default learner differs from the one before it only in its head
(``model/heads.py``): per modality path (``av``, ``visual``, ``audio``) a fixed random expansion (or
none) and a solved weight matrix, the weights of the paths in the answer to a pair, and each class's
``unknown`` threshold. This module holds those as NumPy arrays and computes exactly what
``model.head_inputs.head_scores`` computes with PyTorch:

    x_p    the path's features, each modality's part unit-length, joined, scaled to unit length (float32)
    h_p    relu(x_p E_p) with an expansion E_p, else x_p; unit-length rows for ``class-means`` (float64)
    s_p    h_p W_p  (B, K), summed in float64, then float32; a path without weights scores 0 everywhere

Both sides sum in float64 and round to float32 at the end, so the same features give the same scores
to float64 rounding: a float32 sum over 2,496 features in another order would differ by about 1e-6.
    pair   sum_p w_p s_p over the paths ``mix`` names; unknown when the ``av`` path's own best class
           leads the next (or 0) by less than that class's threshold
    alone  an image alone answers on ``visual``, a sound alone on ``audio``, with their own thresholds

Scores are clamped to [0, 1] and ranked best first (``Answer``). The arrays are written by the learner's
side (``export/head_data.py``) and checked against the learner when a version is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

from serving.errors import HeadDataError

if TYPE_CHECKING:
    from serving.sessions import Placement

PATHS = ("av", "visual", "audio")
KINDS = ("analytic", "class-means")
FORMAT = 1
ARRAYS_FILE = "head.npz"
META_FILE = "head.json"


@dataclass(frozen=True)
class Answer:
    """The ``top_k`` classes of one input, best first, with the path that answered and the verdict."""

    classes: tuple[str, ...]
    scores: tuple[float, ...]
    path: str
    unknown: bool


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm (at least 1e-12, as PyTorch's ``F.normalize``)."""
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    out: np.ndarray = x / np.maximum(norm, 1e-12).astype(x.dtype)
    return out


def unit_features(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Each part unit-length, then joined and scaled to unit length: ``(B, sum D)`` float32."""
    joined = np.concatenate([unit_rows(np.asarray(p, dtype=np.float32)) for p in parts], axis=1)
    out: np.ndarray = (joined / np.float32(len(parts) ** 0.5)).astype(np.float32, copy=False)
    return out


@dataclass(frozen=True)
class ServedHead:
    """See the module docstring. ``expansions[p]`` is ``(D_p, M_p)`` or None; ``weights[p]`` ``(M_p, K)``
    for the paths that have seen examples; ``thresholds[p]`` ``(K,)``; ``mix`` sums to 1."""

    kind: str
    classes: tuple[str, ...]
    input_dims: dict[str, int]
    expansions: dict[str, np.ndarray | None]
    weights: dict[str, np.ndarray]
    thresholds: dict[str, np.ndarray]
    mix: dict[str, float]
    base: str = ""  # the digest of the base whose features it reads (serving/base.py), when known
    source: str = field(default="", compare=False)  # what it was read from, for error messages
    # where scores() runs when not in NumPy: serving.head_graph.DeviceScores (placed())
    scorer: Callable[[np.ndarray, str], np.ndarray] | None = field(default=None, compare=False, repr=False)
    _expansions64: dict[str, np.ndarray | None] = field(default_factory=dict, init=False, repr=False, compare=False)
    _weights64: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        k = len(self.classes)
        if self.kind not in KINDS:
            raise HeadDataError("kind", f"one of {list(KINDS)}, got {self.kind!r}")
        if set(self.input_dims) != set(PATHS):
            raise HeadDataError("input_dims", f"names paths {sorted(self.input_dims)}, expected {sorted(PATHS)}")
        for p in PATHS:
            e = self.expansions.get(p)
            width = self.input_dims[p] if e is None else e.shape[1]
            if e is not None and (e.ndim != 2 or e.shape[0] != self.input_dims[p]):
                raise HeadDataError(f"expansions.{p}", f"shape {e.shape}, expected ({self.input_dims[p]}, M)")
            w = self.weights.get(p)
            if w is not None and w.shape != (width, k):
                raise HeadDataError(f"weights.{p}", f"shape {w.shape}, expected ({width}, {k})")
            t = self.thresholds.get(p)
            if t is None or t.shape != (k,):
                raise HeadDataError(f"thresholds.{p}", f"shape {None if t is None else t.shape}, expected ({k},)")
        if any(p not in PATHS for p in self.mix) or not self.mix:
            raise HeadDataError("mix", f"names paths {sorted(self.mix)}")
        if self.scorer is not None:
            return  # scores() runs elsewhere, with copies of its own
        # float64 copies, once: every call sums in float64 (module docstring)
        object.__setattr__(self, "_expansions64", {p: None if e is None else e.astype(np.float64)
                                                   for p, e in self.expansions.items()})
        object.__setattr__(self, "_weights64", {p: w.astype(np.float64) for p, w in self.weights.items()})

    # -- scores -----------------------------------------------------------------------------------
    def scores(self, x: np.ndarray, path: str) -> np.ndarray:
        """``(B, D_p)`` unit features of ``path`` -> ``(B, K)`` float32 scores (zeros without weights)."""
        if self.scorer is not None:
            return self.scorer(x, path)
        w = self._weights64.get(path)
        if w is None:
            return np.zeros((len(x), len(self.classes)), dtype=np.float32)
        e = self._expansions64.get(path)
        h = np.asarray(x, dtype=np.float32).astype(np.float64)
        if e is not None:
            h = np.maximum(h @ e, 0.0)
        if self.kind == "class-means":
            h = unit_rows(h)
        out: np.ndarray = (h @ w).astype(np.float32)
        return out

    def placed(self, placement: "Placement") -> "ServedHead":
        """This head scoring on the GPU of ``placement`` (``serving/head_graph.py``), through ONNX
        Runtime's CUDA provider also where the base runs on TensorRT (which would compute in float32
        and build an engine per class count); on the CPU, itself. Raises :class:`HeadDataError`."""
        if not placement.on_gpu:
            return self
        from serving.head_graph import DeviceScores

        try:
            return replace(self, scorer=DeviceScores(self, placement.on_cuda()))
        except Exception as exc:  # PlacementError, or ONNX Runtime's own types copying the arrays
            raise HeadDataError("placement", f"the head does not run on {placement.on_cuda().describe()}: "
                                f"{type(exc).__name__}: {exc}") from None

    def pair_scores(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """``(B, K)`` answers to pairs: the weighted sum of the paths ``mix`` names."""
        total: np.ndarray = np.zeros((), dtype=np.float32)
        for p, w in self.mix.items():
            total = total + np.float32(w) * self.scores(features[p], p)
        return np.asarray(total, dtype=np.float32)

    def unknown(self, scores: np.ndarray, path: str) -> np.ndarray:
        """``(B,)`` bool: the best class leads the next (or 0) by less than its threshold on ``path``."""
        index = scores.argmax(axis=1)
        best = scores[np.arange(len(scores)), index]
        if scores.shape[1] > 1:
            second = np.maximum(np.partition(scores, -2, axis=1)[:, -2], np.float32(0.0))
        else:
            second = np.zeros_like(best)
        out: np.ndarray = (best - second) < self.thresholds[path][index]
        return out

    # -- answers ----------------------------------------------------------------------------------
    def answer(self, features: Mapping[str, np.ndarray | None], top_k: int = 5) -> list[Answer]:
        """One :class:`Answer` per row of :meth:`judge`'s, its scores clamped to [0, 1], best first (ties:
        the earlier class first)."""
        if top_k < 1:
            raise HeadDataError("top_k", f"must be >= 1, got {top_k}")
        scores, paths, unknown = self.judge(features)
        clamped = np.clip(scores, 0.0, 1.0)
        order = np.argsort(-clamped, axis=1, kind="stable")[:, :min(top_k, len(self.classes))]
        return [Answer(tuple(self.classes[j] for j in row), tuple(float(clamped[i, j]) for j in row),
                       PATHS[paths[i]], bool(unknown[i])) for i, row in enumerate(order)]

    def judge(self, features: Mapping[str, np.ndarray | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(scores (B, K) float32, path codes (B,) into PATHS, unknown (B,) bool)``. ``features``: the
        base's ``visual`` ``(B, Dv)`` and ``audio`` ``(B, Da)`` features, rows of NaN where a sample
        lacks that input (or None for none)."""
        image, audio = features.get("visual"), features.get("audio")
        n = len(image) if image is not None else len(audio) if audio is not None else 0
        has_v = np.zeros(n, bool) if image is None else ~np.isnan(image).any(axis=1)
        has_a = np.zeros(n, bool) if audio is None else ~np.isnan(audio).any(axis=1)
        missing = np.flatnonzero(~(has_v | has_a))
        if len(missing):
            raise HeadDataError("features", f"row(s) {missing.tolist()[:5]} have neither an image nor a sound")
        scores = np.zeros((n, len(self.classes)), dtype=np.float32)
        paths = np.zeros(n, dtype=np.int64)
        unknown = np.zeros(n, dtype=bool)
        pairs = np.flatnonzero(has_v & has_a)
        if len(pairs):
            assert image is not None and audio is not None
            by_path = {"visual": unit_features([image[pairs]]), "audio": unit_features([audio[pairs]]),
                       "av": unit_features([image[pairs], audio[pairs]])}
            scores[pairs], paths[pairs] = self.pair_scores(by_path), PATHS.index("av")
            if "av" in self.weights:
                unknown[pairs] = self.unknown(self.scores(by_path["av"], "av"), "av")
        for path, rows in (("visual", np.flatnonzero(has_v & ~has_a)), ("audio", np.flatnonzero(has_a & ~has_v))):
            if len(rows):
                source = image if path == "visual" else audio
                assert source is not None
                s = self.scores(unit_features([source[rows]]), path)
                scores[rows], paths[rows], unknown[rows] = s, PATHS.index(path), self.unknown(s, path)
        return scores, paths, unknown

    # -- files ------------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for p in PATHS:
            e = self.expansions.get(p)
            if e is not None:
                out[f"{p}.expansion"] = e
            if p in self.weights:
                out[f"{p}.weights"] = self.weights[p]
            out[f"{p}.thresholds"] = self.thresholds[p]
        return out

    def write(self, directory: Path) -> None:
        """Writes ``head.npz`` and ``head.json`` (with the arrays' checksum) into ``directory``."""
        arrays = directory / ARRAYS_FILE
        with open(arrays, "wb") as f:
            np.savez(f, **self.arrays())  # type: ignore[arg-type]  # NumPy's stub types **kwds oddly
            f.flush()
            os.fsync(f.fileno())
        meta = {"format": FORMAT, "kind": self.kind, "classes": list(self.classes), "input_dims": self.input_dims,
                "mix": self.mix, "base": self.base, "arrays_sha256": hashlib.sha256(arrays.read_bytes()).hexdigest()}
        with open(directory / META_FILE, "w") as f:
            f.write(json.dumps(meta, indent=2, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())

    @staticmethod
    def present(directory: Path) -> bool:
        return (directory / META_FILE).is_file()

    @classmethod
    def load(cls, directory: Path) -> "ServedHead":
        """The head written into ``directory``. Raises :class:`HeadDataError` naming what is wrong."""
        try:
            meta = json.loads((directory / META_FILE).read_text())
            data = (directory / ARRAYS_FILE).read_bytes()
        except (OSError, ValueError) as exc:
            raise HeadDataError(META_FILE, f"missing or unreadable: {exc}") from None
        if meta.get("format") != FORMAT:
            raise HeadDataError(f"{META_FILE}.format", f"format {meta.get('format')!r}, this build reads {FORMAT}")
        if hashlib.sha256(data).hexdigest() != meta.get("arrays_sha256"):
            raise HeadDataError(ARRAYS_FILE, f"does not match its checksum in {META_FILE}")
        import io

        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            return cls(kind=str(meta["kind"]), classes=tuple(str(c) for c in meta["classes"]),
                       input_dims={str(p): int(d) for p, d in meta["input_dims"].items()},
                       expansions={p: arrays.get(f"{p}.expansion") for p in PATHS},
                       weights={p: arrays[f"{p}.weights"] for p in PATHS if f"{p}.weights" in arrays},
                       thresholds={p: arrays[f"{p}.thresholds"] for p in PATHS if f"{p}.thresholds" in arrays},
                       mix={p: float(meta["mix"][p]) for p in PATHS if p in meta["mix"]},  # the learner's order
                       base=str(meta.get("base", "")),
                       source=str(directory))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, HeadDataError):
                raise
            raise HeadDataError(ARRAYS_FILE, f"malformed: {type(exc).__name__}: {exc}") from None
