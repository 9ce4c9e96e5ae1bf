"""The served model: one immutable (version, learner) pair, swapped atomically between requests.

Readers take :attr:`ModelSlot.current` once per batch and use that pair for the whole batch, so a
request never sees half of one version and half of another. A new version is fully trained, evaluated
and written to disk before :meth:`ModelSlot.swap` replaces the reference under a lock.

A version whose strategy scores with a statistics head is also served *compiled*: its forward from
model-ready inputs to class scores runs as one ONNX Runtime graph per modality path
(``export/compiled.py``), compiled in the background after its commit (``service/compiling.py``),
which swaps in the same version with its graphs. The learner still prepares the inputs and keeps
learning; :meth:`ServedVersion.predict` takes the graphs when there are some.

A version whose head reads the frozen encoders' own features (the default ``mcil``) needs no graphs of
its own: it is served as its head over its base's compiled image encoder (``export/head_version.py``),
swapped in milliseconds after its commit.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from export.compiled import CompiledVersion
    from export.head_version import HeadVersion
    from model.learner import Learner
    from model.samples import Prediction, Sample
    from service.store import VersionMeta

log = logging.getLogger(__name__)

COMPILED_RUNNER = "compiled-onnxruntime"
"""What ``runner`` reports (GetModelInfo, ``mcil_model_info``) while a compiled version serves."""
HEAD_RUNNER = "base-onnxruntime"
"""What ``runner`` reports while a version is served as its head over its base's compiled encoder."""
HEAD_INT8_RUNNER = "base-onnxruntime-int8"
"""The same, the base's image graph in int8 (``server.base_precision: int8``, ``export/int8.py``); on a
GPU, ``base-onnxruntime-cuda`` or ``base-onnxruntime-tensorrt`` (``server.base_device``)."""


@dataclass(frozen=True)
class ServedVersion:
    """A committed version in memory. ``number`` 0 is the untrained learner (no classes yet)."""

    number: int
    learner: "Learner"
    meta: "VersionMeta | None"
    evaluation: dict[str, object] | None  # ContinualEvaluation.to_dict() of this version
    compiled: "CompiledVersion | HeadVersion | None" = None  # its graphs or head over a base (module docstring)

    @property
    def runner(self) -> str | None:
        """``HEAD_RUNNER``, ``HEAD_INT8_RUNNER`` or ``COMPILED_RUNNER`` while served that way, else None
        (the learner answers)."""
        if self.compiled is None or self.compiled.broken:
            return None
        from export.head_version import HeadVersion

        if isinstance(self.compiled, HeadVersion):
            base = self.compiled.base
            if base.placement.on_gpu:
                return f"{HEAD_RUNNER}-{base.placement.kind}"
            return HEAD_INT8_RUNNER if base.precision == "int8" else HEAD_RUNNER
        return COMPILED_RUNNER

    @property
    def classes(self) -> list[str]:
        return list(self.learner.classes)

    def predict(self, samples: Sequence["Sample"], top_k: int) -> list["Prediction"]:
        """Top-k classes per sample: on the compiled graphs when there are some, else the learner.

        Graphs that fail on valid input (they were checked when loaded, so this is not expected) are
        logged once and left aside: the learner answers from then on."""
        from model.errors import InvalidInputError

        compiled = self.compiled
        if compiled is not None and not compiled.broken:
            try:
                return compiled.predict(samples, top_k=top_k)
            except InvalidInputError:
                raise
            except Exception as exc:  # noqa: BLE001 - the learner answers instead
                compiled.broken = f"{type(exc).__name__}: {exc}"
                log.error("version %d: its compiled graphs failed (%s); the learner answers from now on",
                          self.number, compiled.broken)
        return self.learner.predict(list(samples), top_k=top_k)


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
