"""The versions a serving process without PyTorch answers from: heads swapped in as the learner writes them.

    watcher = HeadWatcher(state_dir, slot, threads=2, precision="fp32")
    watcher.start()          # slot.current: the LightVersion <state_dir>/current names, once its head is on disk

The learner child (``service/compiling.py``) writes each served version's head to
``<state_dir>/heads/vNNNN/`` and names the served version in ``<state_dir>/current``. The watcher
polls ``current`` every ``WATCH_SECONDS`` and swaps in that version's head over its base's graphs
(``serving/base.py``, ``serving/features.py``): NumPy and ONNX Runtime only. With
``server.base_precision: int8`` it takes the base's int8 image graph once the learner has built it
(``<state_dir>/bases/<digest>.int8/``, ``export/int8.py``), also for the version already served.
A head that cannot be served is logged and the version before keeps answering; it is tried again
after ``RETRY_SECONDS``. With ``server.base_device: tensorrt`` a version waits for its base's engines,
which the learner builds (once per base).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from service.errors import FailedPrecondition
from service.store import read_current
from serving.sessions import CPU, Placement

if TYPE_CHECKING:
    from serving.base import BaseGraphs
    from serving.features import BaseFeatures
    from serving.head import Answer, ServedHead
    from serving.inputs import RawSample

log = logging.getLogger(__name__)

WATCH_SECONDS = 0.05
RETRY_SECONDS = 30.0
"""A head that did not load is tried again after this long (a GPU out of memory passes), or at once
when the learner writes it anew."""


@dataclasses.dataclass(frozen=True)
class LightVersion:
    """A committed version as this process serves it: its head over its base's graphs."""

    number: int
    head: "ServedHead | None"  # None: nothing learned yet (version 0)
    features: "BaseFeatures | None"

    @property
    def classes(self) -> list[str]:
        return list(self.head.classes) if self.head is not None else []

    def predict(self, samples: Sequence["RawSample"], top_k: int) -> list["Answer"]:
        if self.head is None or self.features is None:
            raise FailedPrecondition("no classes learned yet")
        return self.head.answer(self.features.of(samples), top_k)


class HeadWatcher:
    """Keeps ``slot`` on the version ``<state_dir>/current`` names, once its head is on disk."""

    def __init__(self, state_dir: Path, slot: Any, threads: int, precision: str = "fp32",
                 placement: Placement = CPU) -> None:
        self.state_dir = state_dir
        self.slot = slot
        self.threads = threads
        self.precision = precision  # int8: the base's int8 image graph once the learner built it
        self.placement = placement  # where the base's graphs and the heads run (server.base_device)
        self._bases: dict[str, tuple["BaseGraphs", "BaseFeatures"]] = {}
        self._int8_checked = 0.0  # when the int8 folder was last looked for
        # ((version, its head.json's mtime), when) of a head that did not load
        self._failed: tuple[tuple[int, int], float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mcil-heads", daemon=True)

    def start(self) -> None:
        self.refresh()
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def refresh(self) -> None:
        """Swaps in the version ``current`` names when its head is there (else keeps the one served)."""
        from serving.base import BaseGraphs
        from serving.errors import BaseGraphsError, HeadDataError
        from serving.features import BaseFeatures
        from serving.head import ServedHead

        number = read_current(self.state_dir)
        if number == self.slot.current.number:
            self._take_int8()
            return
        if number == 0:
            self.slot.swap(LightVersion(0, None, None))
            log.info("serving version 0 (nothing learned)")
            return
        folder = self.state_dir / "heads" / f"v{number:04d}"
        try:
            stamp = (number, (folder / "head.json").stat().st_mtime_ns)
        except FileNotFoundError:
            return  # the learner writes it within milliseconds of the commit (the first base: seconds)
        if self._failed is not None and stamp == self._failed[0] and \
                time.monotonic() - self._failed[1] < RETRY_SECONDS:
            return  # tried and failed: again once the learner writes that head anew, or a while later
        if self.placement.kind == "tensorrt" and not self._engines_ready(folder):
            return  # the learner builds the base's TensorRT engines first, then it is served
        try:
            head = ServedHead.load(folder)
            if head.base not in self._bases:
                where = self.state_dir / "bases" / head.base
                base = self._int8(BaseGraphs.load(where, self.threads, head.base, self.placement))
                self._bases = {head.base: (base, BaseFeatures(base))}  # one base at a time
            head = head.placed(self.placement)
        except (HeadDataError, BaseGraphsError, OSError) as exc:
            self._failed = (stamp, time.monotonic())
            log.error("version %d cannot be served here (%s); still serving version %d", number, exc,
                      self.slot.current.number)
            return
        self.slot.swap(LightVersion(number, head, self._bases[head.base][1]))
        log.info("serving version %d (%d classes) as its head over base %s (%s image graph); PyTorch %s", number,
                 len(head.classes), head.base[:12], self._bases[head.base][0].precision, pytorch_state())

    def _engines_ready(self, folder: Path) -> bool:
        """Whether the TensorRT engines of the base the head in ``folder`` reads are built, from
        ``head.json`` and ``trt.json`` alone: the head's arrays are read once they are."""
        import json

        from serving.base import engines_ready

        try:
            base = str(json.loads((folder / "head.json").read_text())["base"])
        except (OSError, ValueError, KeyError, TypeError):
            return True  # ServedHead.load says what is wrong with it
        return base in self._bases or engines_ready(self.state_dir / "bases" / base, self.placement)

    def _int8(self, base: "BaseGraphs") -> "BaseGraphs":
        """``base`` over its int8 image graph when it is wanted and the learner has built it."""
        from serving.base import int8_folder
        from serving.errors import BaseGraphsError

        folder = int8_folder(self.state_dir / "bases" / base.digest)
        if self.precision != "int8" or not folder.is_dir():
            return base
        try:
            return base.with_int8(folder, self.threads)
        except BaseGraphsError as exc:
            log.warning("serving fp32 image features: %s", exc)  # the learner removes it and builds it again
            return base

    def _take_int8(self) -> None:
        """Serves the current version over its base's int8 image graph once it appears (within about a second)."""
        from serving.features import BaseFeatures

        served = self.slot.current
        if self.precision != "int8" or served.head is None or served.features is None or \
                served.features.base.precision == "int8" or time.monotonic() - self._int8_checked < 1.0:
            return
        self._int8_checked = time.monotonic()
        base = self._int8(served.features.base)
        if base.precision == "int8":
            self._bases = {base.digest: (base, BaseFeatures(base))}
            self.slot.swap(LightVersion(served.number, served.head, self._bases[base.digest][1]))
            log.info("serving version %d over base %s's int8 image graph", served.number, base.digest[:12])

    def _run(self) -> None:
        while not self._stop.wait(WATCH_SECONDS):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - the watcher must outlive a bad file
                log.exception("cannot refresh the served head")


def pytorch_state() -> str:
    """``"not loaded"``, or which of PyTorch's modules this process has imported (it should have none)."""
    loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    return "not loaded" if not loaded else f"LOADED ({', '.join(loaded[:3])})"
