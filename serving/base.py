"""A base's frozen image encoder as one ONNX graph: compiled once, shared by every version over it.

    <state_dir>/bases/<digest>/   base.json, image.onnx     (written by ``python -m export.base``)

    base = BaseGraphs.load(folder, threads=2)
    features = base.image_features(images)          # (B, 3, S, S) float32 -> (B, D) float32

A *base* is what a version's features are computed by: the preset's frozen encoders. The default
learner never changes them, so every version over a base reads the same features, and only its head
(``serving/head.py``) differs: the graph is built once per base (its digest names the frozen tensors,
the input size and how the graph is built) and a commit never waits for a compile.

The folder is a cache. ``base.json`` names the digest and the graph's checksum; a folder that does not
match is refused by name (:class:`BaseGraphsError`) and built again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.sessions import cpu_session

if TYPE_CHECKING:
    import onnxruntime

FORMAT = 1
META_FILE = "base.json"
IMAGE_GRAPH = "image.onnx"
CHUNK = 16
"""Images per graph call: the activations of 16 pictures at 160 px stay under 150 MB (``lite``)."""


class BaseGraphsError(ValueError):
    """A base's folder is missing, damaged or of another base (``field`` names what is at fault)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


@dataclass
class BaseGraphs:
    """The base's image graph on ONNX Runtime (module docstring)."""

    digest: str
    image_size: int
    feature_dim: int
    session: "onnxruntime.InferenceSession"
    meta: dict[str, Any]

    @staticmethod
    def present(folder: Path) -> bool:
        return (folder / META_FILE).is_file()

    @classmethod
    def load(cls, folder: Path, threads: int, digest: str | None = None) -> "BaseGraphs":
        """The graph in ``folder``; ``digest``: the base it must be. Raises :class:`BaseGraphsError`."""
        try:
            meta: dict[str, Any] = json.loads((folder / META_FILE).read_text())
            data = (folder / IMAGE_GRAPH).read_bytes()
        except (OSError, ValueError) as exc:
            raise BaseGraphsError(str(folder / META_FILE), f"missing or unreadable: {exc}") from None
        if meta.get("format") != FORMAT:
            raise BaseGraphsError(f"{META_FILE}.format", f"format {meta.get('format')!r}, this build reads {FORMAT}")
        if digest is not None and meta.get("digest") != digest:
            raise BaseGraphsError(f"{META_FILE}.digest", f"the graph is of base {meta.get('digest')}, not {digest}")
        if hashlib.sha256(data).hexdigest() != meta.get("image_sha256"):
            raise BaseGraphsError(IMAGE_GRAPH, f"does not match its checksum in {META_FILE}")
        try:
            session = cpu_session(data, threads)
        except Exception as exc:  # ONNX Runtime raises its own types for a damaged file
            raise BaseGraphsError(IMAGE_GRAPH, f"cannot load: {type(exc).__name__}: {exc}") from None
        return cls(str(meta["digest"]), int(meta["image_size"]), int(meta["feature_dim"]), session, meta)

    def image_features(self, images: np.ndarray) -> np.ndarray:
        """``(B, 3, S, S)`` model-ready images -> ``(B, D)`` float32 frozen features, ``CHUNK`` at a time."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != (3, self.image_size, self.image_size):
            raise BaseGraphsError("images", f"shape {images.shape}, expected (B, 3, {self.image_size}, "
                                  f"{self.image_size})")
        out = [self.session.run(None, {"images": images[i:i + CHUNK]})[0] for i in range(0, len(images), CHUNK)]
        if not out:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)
