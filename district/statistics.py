"""What a classroom shares with its district: the sums of the examples taught there, and nothing more.

A room's contribution (:class:`RoomStatistics`) holds, per modality path (``av``, ``visual``,
``audio``), over the feature space of the district's shared base (width ``M``, float64):

    gram_upper   the upper triangle of G = sum h h^T (the Gram matrix is symmetric: half is exact)
    targets      (M, K) C = sum h y^T, one column per class the room taught
    counts       (K,) examples per class

plus each class's name and its ``unknown`` threshold per path, the room's name and the district
identity (a digest of the base and of the head's configuration: sums only add up over identical
features). No example, feature vector or file leaves a room. What the sums reveal is in
docs/district.md.

:func:`merge` adds contributions in the order given (callers sort them by room name, so every
round sums in the same order and gives the same bits), matching classes by name, case-insensitively.
This module is NumPy only: the district's server and the rooms' Flower clients never import PyTorch.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PATHS = ("av", "visual", "audio")
FORMAT = 1
MAX_NAME_LENGTH = 128  # as the daemon's class names (service/uploads.py)
MAX_CLASSES = 10_000
MAX_COUNT = 2**40  # examples of one class: far beyond any room, far below int64's overflow when summed


class StatisticsError(ValueError):
    """Statistics that cannot be read or added up; ``field`` names what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass
class PathSums:
    """One path's sums (module docstring)."""

    gram_upper: np.ndarray  # (M (M + 1) / 2,) float64, row-major upper triangle with the diagonal
    targets: np.ndarray  # (M, K) float64
    counts: np.ndarray  # (K,) int64
    thresholds: np.ndarray  # (K,) float32, -inf where the path saw no example of the class

    @property
    def width(self) -> int:
        return int(self.targets.shape[0])

    def gram(self) -> np.ndarray:
        """The full symmetric ``(M, M)`` Gram matrix."""
        m = self.width
        out = np.zeros((m, m), dtype=np.float64)
        rows, cols = np.triu_indices(m)
        out[rows, cols] = self.gram_upper
        out[cols, rows] = self.gram_upper
        return out


def upper_triangle(gram: np.ndarray) -> np.ndarray:
    rows, cols = np.triu_indices(gram.shape[0])
    return np.ascontiguousarray(gram[rows, cols], dtype=np.float64)


@dataclass
class RoomStatistics:
    """A room's contribution, or the sum of several (module docstring)."""

    room: str
    identity: str  # the district identity the sums were taken over
    classes: list[str]
    paths: dict[str, PathSums] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.classes) > MAX_CLASSES:
            raise StatisticsError("classes", f"{len(self.classes)} classes, at most {MAX_CLASSES}")
        for name in self.classes:
            if not name or name != name.strip() or len(name) > MAX_NAME_LENGTH or not name.isprintable():
                raise StatisticsError("classes", f"{name[:40]!r}: a class name is 1-{MAX_NAME_LENGTH} printable "
                                      "characters without surrounding spaces")
        keys = [c.casefold() for c in self.classes]
        if len(set(keys)) != len(keys):
            raise StatisticsError("classes", f"names repeat (case-insensitively): {self.classes}")
        for p, s in self.paths.items():
            if p not in PATHS:
                raise StatisticsError("paths", f"unknown path {p!r}")
            arrays = (s.gram_upper, s.targets, s.counts, s.thresholds)
            if [a.ndim for a in arrays] != [1, 2, 1, 1] or any(a.dtype.kind not in "fiu" for a in arrays):
                raise StatisticsError(f"paths.{p}", "gram_upper, targets, counts and thresholds must be numeric "
                                      "arrays of 1, 2, 1 and 1 dimensions")
            k, m = len(self.classes), s.width
            if (s.targets.shape != (m, k) or s.counts.shape != (k,) or s.thresholds.shape != (k,)
                    or s.gram_upper.shape != (m * (m + 1) // 2,)):
                raise StatisticsError(f"paths.{p}", f"shapes gram_upper {s.gram_upper.shape}, targets "
                                      f"{s.targets.shape}, counts {s.counts.shape}, thresholds {s.thresholds.shape} "
                                      f"do not fit {k} classes of width {m}")
            if not (np.isfinite(s.gram_upper).all() and np.isfinite(s.targets).all()):
                raise StatisticsError(f"paths.{p}", "non-finite sums")
            if (s.counts < 0).any() or (s.counts > MAX_COUNT).any():
                raise StatisticsError(f"paths.{p}.counts", f"counts must lie in [0, {MAX_COUNT}]")
            if np.isnan(s.thresholds).any() or np.isposinf(s.thresholds).any():
                raise StatisticsError(f"paths.{p}.thresholds", "NaN or +inf (-inf marks a class the path never saw)")
            rows, cols = np.triu_indices(m)
            if (s.gram_upper[rows == cols] < 0).any():
                raise StatisticsError(f"paths.{p}.gram_upper", "a negative diagonal: not a sum of h h^T")

    @property
    def examples(self) -> dict[str, int]:
        return {p: int(s.counts.sum()) for p, s in self.paths.items()}

    def digest(self) -> str:
        """sha256 of everything the contribution holds (a room that taught nothing new since sends the same)."""
        h = hashlib.sha256(json.dumps([FORMAT, self.identity, self.classes]).encode())
        for p in sorted(self.paths):
            s = self.paths[p]
            for a in (s.gram_upper, s.targets, s.counts, s.thresholds):
                h.update(p.encode() + str(a.dtype).encode() + repr(a.shape).encode() + np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    # -- bytes on the wire ---------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for p, s in self.paths.items():
            out[f"{p}.gram_upper"] = np.ascontiguousarray(s.gram_upper, dtype=np.float64)
            out[f"{p}.targets"] = np.ascontiguousarray(s.targets, dtype=np.float64)
            out[f"{p}.counts"] = np.ascontiguousarray(s.counts, dtype=np.int64)
            out[f"{p}.thresholds"] = np.ascontiguousarray(s.thresholds, dtype=np.float32)
        return out

    def header(self) -> dict[str, object]:
        return {"format": FORMAT, "room": self.room, "identity": self.identity, "classes": list(self.classes),
                "paths": sorted(self.paths)}

    @classmethod
    def from_parts(cls, header: dict[str, object], arrays: dict[str, np.ndarray]) -> "RoomStatistics":
        if header.get("format") != FORMAT:
            raise StatisticsError("format", f"format {header.get('format')!r}, this release reads {FORMAT}")
        classes = header.get("classes")
        paths = header.get("paths")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise StatisticsError("classes", "must be a list of names")
        if not isinstance(paths, list):
            raise StatisticsError("paths", "must be a list of path names")
        sums = {}
        for p in paths:
            if p not in PATHS:
                raise StatisticsError("paths", f"unknown path {p!r}")
            try:
                parts = [arrays[f"{p}.{name}"] for name in ("gram_upper", "targets", "counts", "thresholds")]
                if any(a.dtype.kind not in "fiu" for a in parts):
                    raise StatisticsError(f"paths.{p}", "arrays must be numeric")
                sums[str(p)] = PathSums(parts[0].astype(np.float64), parts[1].astype(np.float64),
                                        parts[2].astype(np.int64), parts[3].astype(np.float32))
            except KeyError as exc:
                raise StatisticsError(f"paths.{p}", f"array {exc} missing") from None
        return cls(str(header.get("room", "")), str(header.get("identity", "")), list(classes), sums)

    def to_bytes(self) -> bytes:
        """An uncompressed ``.npz`` (no pickles) with the header as JSON in ``header``."""
        buffer = io.BytesIO()
        header = np.frombuffer(json.dumps(self.header()).encode(), dtype=np.uint8)
        arrays: dict[str, Any] = {"header": header, **self.arrays()}
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "RoomStatistics":
        """Reads what :meth:`to_bytes` wrote; nothing else: no pickles, no compressed members (their
        unpacked size is not known in advance), only the arrays the header names."""
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                if any(i.compress_type != zipfile.ZIP_STORED for i in archive.infolist()):
                    raise StatisticsError("statistics", "compressed members are not read")
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                header = json.loads(npz["header"].tobytes().decode())
                if not isinstance(header, dict):
                    raise StatisticsError("header", "must be an object")
                wanted = [f"{p}.{n}" for p in header.get("paths") or [] if isinstance(p, str)
                          for n in ("gram_upper", "targets", "counts", "thresholds")]
                arrays = {k: npz[k] for k in wanted if k in npz.files}
        except (ValueError, OSError, KeyError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
            raise StatisticsError("statistics", f"not a statistics file: {exc}") from None
        return cls.from_parts(header, arrays)


def merge(contributions: list[RoomStatistics], room: str = "district") -> RoomStatistics:
    """The sums of ``contributions``, added in the order given (float64), over the union of their
    classes: a class named alike (case-insensitively) in several rooms is one class, named as it
    first appears. Its threshold on a path is the lowest of the rooms' (the most permissive), so a
    merge of merges gives the same thresholds. All must share one identity and widths."""
    if not contributions:
        raise StatisticsError("contributions", "nothing to merge")
    identity = contributions[0].identity
    for c in contributions:
        if c.identity != identity:
            raise StatisticsError(f"rooms.{c.room}.identity", f"{c.identity[:12]} differs from {identity[:12]}")
    names: list[str] = []
    rows: dict[str, int] = {}
    for c in contributions:
        for name in c.classes:
            if name.casefold() not in rows:
                rows[name.casefold()] = len(names)
                names.append(name)
    k = len(names)
    paths: dict[str, PathSums] = {}
    for c in contributions:
        index = np.array([rows[n.casefold()] for n in c.classes], dtype=np.int64)
        for p, s in c.paths.items():
            if p not in paths:
                m = s.width
                paths[p] = PathSums(np.zeros(m * (m + 1) // 2), np.zeros((m, k)), np.zeros(k, np.int64),
                                    np.full(k, -np.inf, np.float32))
            out = paths[p]
            if out.width != s.width:
                raise StatisticsError(f"rooms.{c.room}.paths.{p}", f"width {s.width}, others {out.width}")
            out.gram_upper += s.gram_upper
            out.targets[:, index] += s.targets
            out.counts[index] += s.counts
            seen = s.counts > 0
            lower = np.where(np.isneginf(out.thresholds[index]), s.thresholds,
                             np.minimum(out.thresholds[index], s.thresholds))
            out.thresholds[index] = np.where(seen, lower, out.thresholds[index])
    return RoomStatistics(room, identity, names, paths)


__all__ = ["PATHS", "PathSums", "RoomStatistics", "StatisticsError", "merge", "upper_triangle"]
