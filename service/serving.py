"""The served model: one immutable (version, learner) pair, swapped atomically between requests.

Readers take :attr:`ModelSlot.current` once per batch and use that pair for the whole batch, so a
request never sees half of one version and half of another. A new version is fully trained, evaluated
and written to disk before :meth:`ModelSlot.swap` replaces the reference under a lock.

A version whose strategy scores with a statistics head is also served *compiled*: its forward from
model-ready inputs to class scores runs as one ONNX Runtime graph per modality path
(``export/compiled.py``), compiled once before its commit and stored with it. The learner still
prepares the inputs and keeps learning; :meth:`ServedVersion.predict` takes the graphs when there
are some. :func:`compile_version` and :func:`load_compiled` never fail a commit or a start: a
version that cannot compile, or whose graphs cannot load, serves the hybrid path with a log line.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from export.compiled import CompiledVersion
    from model.learner import Learner
    from model.samples import Prediction, Sample
    from service.store import VersionMeta

log = logging.getLogger(__name__)

COMPILED_RUNNER = "compiled-onnxruntime"
"""What ``runner`` reports (GetModelInfo, ``mcil_model_info``) while a compiled version serves."""


@dataclass(frozen=True)
class ServedVersion:
    """A committed version in memory. ``number`` 0 is the untrained learner (no classes yet)."""

    number: int
    learner: "Learner"
    meta: "VersionMeta | None"
    evaluation: dict[str, object] | None  # ContinualEvaluation.to_dict() of this version
    compiled: "CompiledVersion | None" = None  # its graphs, when it has some (module docstring)

    @property
    def classes(self) -> list[str]:
        return list(self.learner.classes)

    def predict(self, samples: Sequence["Sample"], top_k: int) -> list["Prediction"]:
        """Top-k classes per sample: on the compiled graphs when there are some, else the learner."""
        if self.compiled is not None:
            return self.compiled.predict(samples, top_k=top_k)
        return self.learner.predict(list(samples), top_k=top_k)


def compile_version(learner: "Learner") -> "CompiledVersion | None":
    """``learner``'s graphs, or ``None`` (logged) when it cannot be compiled here."""
    try:
        from export.compiled import CompiledVersion
        from export.errors import CompileError
        from export.served_graphs import compile_problem
    except ImportError as exc:
        log.warning("versions are served on the hybrid path: cannot compile graphs (%s)", exc)
        return None
    problem = compile_problem(learner)
    if not problem and learner.device.type != "cpu":
        problem = f"compiled graphs run on the CPU and the learner is on {learner.device}"
    if problem:
        log.info("serving the hybrid path, not compiled graphs: %s", problem)
        return None
    try:
        compiled = CompiledVersion.compile(learner)
    except CompileError as exc:
        log.warning("serving the hybrid path: compiling the version failed: %s", exc)
        return None
    log.info("compiled the version into %d graphs in %.1f s", len(compiled.graphs), compiled.compile_seconds or 0.0)
    return compiled


def load_compiled(directory: Path, learner: "Learner") -> "CompiledVersion | None":
    """The graphs stored with a version, or ``None`` (logged) when it has none or they do not load."""
    try:
        from export.compiled import CompiledVersion
        from export.errors import CompileError
    except ImportError as exc:
        log.warning("serving the hybrid path: cannot load compiled graphs (%s)", exc)
        return None
    if not CompiledVersion.present(directory):
        return None
    if learner.device.type != "cpu":
        log.info("serving the hybrid path: compiled graphs run on the CPU and the learner is on %s", learner.device)
        return None
    try:
        return CompiledVersion.load(directory, learner)
    except CompileError as exc:
        log.warning("serving the hybrid path: the version's compiled graphs do not load: %s", exc)
        return None


class ModelSlot:
    """Holds the served version; ``current`` is a plain attribute read (atomic in CPython)."""

    def __init__(self, initial: ServedVersion) -> None:
        self._lock = threading.Lock()
        self._current = initial

    @property
    def current(self) -> ServedVersion:
        return self._current

    def swap(self, new: ServedVersion) -> ServedVersion:
        """Serve ``new`` from the next batch on; returns the version it replaced."""
        with self._lock:
            old, self._current = self._current, new
        return old
