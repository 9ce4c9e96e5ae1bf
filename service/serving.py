"""The served model: one immutable (version, learner) pair, swapped atomically between requests.

Readers take :attr:`ModelSlot.current` once per batch and use that pair for the whole batch, so a
request never sees half of one version and half of another. A new version is fully trained, evaluated
and written to disk before :meth:`ModelSlot.swap` replaces the reference under a lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model.learner import Learner
    from service.store import VersionMeta


@dataclass(frozen=True)
class ServedVersion:
    """A committed version in memory. ``number`` 0 is the untrained learner (no classes yet)."""

    number: int
    learner: "Learner"
    meta: "VersionMeta | None"
    evaluation: dict[str, object] | None  # ContinualEvaluation.to_dict() of this version

    @property
    def classes(self) -> list[str]:
        return list(self.learner.classes)


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
