"""Long-lived streams (uploads, job watches) may never take the threads Classify and health need.

The gRPC server runs every call on one of ``server.max_workers`` threads, and a stream holds its
thread for as long as it is open. Two rules keep the others answered (docs/service.md, "Floods"):

- **A cap**: at most ``server.max_open_streams`` uploads and watches are open at once (fewer than
  the threads); one more is refused at once with RESOURCE_EXHAUSTED, which costs its thread
  microseconds.
- **An idle timeout**: an upload that sends nothing for ``limits.upload_idle_seconds`` is ended
  (the client sees CANCELLED, the log says why) and its thread returns to the pool. Watches are idle
  by design (they wait for the job) and end with their job, or when the client goes.

Why not an asyncio server (``grpc.aio``): with these two rules the threaded server keeps Classify's
p99 within 1.3x of idle while 100 uploads stall (``python -m service.chaos``, docs/service.md), and
the model core below it is synchronous anyway (PyTorch calls block a thread whatever the server is).
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Iterator, TypeVar

from service.errors import ResourceExhausted

if TYPE_CHECKING:
    import grpc

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Stream:
    kind: str
    context: "grpc.ServicerContext"
    idle_limit: float | None
    last_seen: float = field(default_factory=time.monotonic)
    ended_idle: bool = False


class StreamSlots:
    """Counts open streams, refuses one over the cap, and ends uploads that went quiet."""

    def __init__(self, max_open: int, upload_idle_seconds: float, check_every: float = 0.5) -> None:
        self.max_open = max_open
        self.upload_idle_seconds = upload_idle_seconds
        self._open: dict[int, _Stream] = {}
        self._lock = threading.Lock()
        self._next_id = 0
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, args=(check_every,), name="mcil-stream-idle",
                                          daemon=True)
        self._watchdog.start()

    @property
    def open_count(self) -> int:
        with self._lock:
            return len(self._open)

    @contextmanager
    def hold(self, kind: str, context: "grpc.ServicerContext", *, idle: bool) -> Iterator[_Stream]:
        """A slot for one stream of ``kind`` ("upload", "watch") for the ``with`` block, or
        ResourceExhausted. ``idle``: end it after ``upload_idle_seconds`` without a message."""
        with self._lock:
            if len(self._open) >= self.max_open:
                raise ResourceExhausted(
                    f"{len(self._open)} uploads and job watches are open, the limit (server.max_open_streams); "
                    "retry later")
            self._next_id += 1
            key = self._next_id
            stream = _Stream(kind, context, self.upload_idle_seconds if idle else None)
            self._open[key] = stream
        try:
            yield stream
        finally:
            with self._lock:
                self._open.pop(key, None)

    @staticmethod
    def touching(stream: _Stream, messages: Iterable[T]) -> Iterator[T]:
        """``messages``, marking the stream alive at each one."""
        for message in messages:
            stream.last_seen = time.monotonic()
            yield message

    def close(self) -> None:
        self._stop.set()

    def _watch(self, check_every: float) -> None:
        while not self._stop.wait(check_every):
            now = time.monotonic()
            with self._lock:
                quiet = [s for s in self._open.values()
                         if s.idle_limit is not None and not s.ended_idle and now - s.last_seen > s.idle_limit]
            for stream in quiet:
                stream.ended_idle = True
                log.info("ending an idle %s: nothing received for %.0f s (limits.upload_idle_seconds)",
                         stream.kind, now - stream.last_seen)
                try:
                    stream.context.cancel()
                except Exception:  # noqa: BLE001 - the call may have ended meanwhile
                    log.debug("cannot cancel an idle stream", exc_info=True)
