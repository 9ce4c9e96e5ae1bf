"""Puts the learner child to sleep when nothing has needed it for a while (``server.learner_idle_seconds``).

    idle = IdleLearner(child, seconds=60, served_is_current=..., before_sleep=...)
    with idle.call():            # around every call forwarded to the learner (service/light.py)
        ...
    idle.start(); idle.close()

In a light daemon, Classify needs the learner only while the version just committed is not served
here yet (and then the learner is up: it just committed); otherwise it is needed only by the calls
the serving process forwards (learning, jobs, versions, rollback, model info, the district) and by
the jobs they start. So once ``seconds`` have passed since the last forwarded call ended, with none in flight, no
job queued or running (the learner's own ``GetModelInfo``), and the version ``current`` names served
here as its head (the learner has written it), the learner is ended gracefully
(:meth:`service.learner_child.LearnerChild.sleep`): the daemon's idle memory is then the serving
process's alone. The next forwarded call starts it again and waits for it (its start-up time is
measured by ``python -m service.light_speed``). ``before_sleep`` runs first (the serving process keeps
the learner's last metrics page, which stays true while it sleeps: nothing changes its state then);
when it raises, the learner stays up until the next check.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from service.learner_child import LearnerChild

log = logging.getLogger(__name__)

CHECK_SECONDS = 0.5  # how often the idle time is checked
ASK_SECONDS = 5.0  # deadline of the GetModelInfo that asks the learner whether a job is queued or running


class IdleLearner:
    """Watches the calls forwarded to the learner and puts it to sleep once idle (module docstring)."""

    def __init__(self, child: "LearnerChild", seconds: float, served_is_current: Callable[[], bool],
                 before_sleep: Callable[[], None] = lambda: None,
                 metadata: Callable[[], list[tuple[str, str]]] = lambda: []) -> None:
        self.child = child
        self.seconds = seconds
        self._served_is_current = served_is_current
        self._before_sleep = before_sleep
        self._metadata = metadata
        self._lock = threading.Lock()
        self._in_flight = 0
        self._last_call = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mcil-learner-idle", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """Around a forwarded call: the learner is not put to sleep while one is in flight."""
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                self._last_call = time.monotonic()

    def _idle(self) -> bool:
        with self._lock:
            return self._in_flight == 0 and time.monotonic() - self._last_call >= self.seconds

    def _no_job(self) -> bool:
        """Whether the learner has no job queued or running (asked directly: not a forwarded call)."""
        from service._proto import mcil_pb2

        try:
            info: Any = self.child.stub(wait=0, wake=False).GetModelInfo(mcil_pb2.GetModelInfoRequest(),
                                                             metadata=self._metadata(), timeout=ASK_SECONDS)
        except Exception as exc:  # noqa: BLE001 - starting, restarting: ask again later
            log.debug("cannot ask the learner about its jobs: %s", exc)
            return False
        return not info.queued_jobs and not info.running_job_id

    def try_sleep(self) -> bool:
        """Puts the learner to sleep if it is idle now (module docstring); whether it did."""
        if not self.child.awake or not self._idle() or not self._served_is_current() or not self._no_job():
            return False
        try:
            self._before_sleep()
        except Exception as exc:  # noqa: BLE001 - not now: the next check tries again
            log.info("the learner stays up for now: %s", exc)
            return False
        with self._lock:  # a call that started meanwhile keeps it awake; one that starts now waits for it
            if self._in_flight or time.monotonic() - self._last_call < self.seconds:
                return False
            return self.child.sleep()

    def _run(self) -> None:
        while not self._stop.wait(CHECK_SECONDS):
            try:
                self.try_sleep()
            except Exception:  # noqa: BLE001 - the watcher must outlive a bad moment
                log.exception("cannot put the learner to sleep")
