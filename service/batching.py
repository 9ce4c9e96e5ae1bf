"""Dynamic batching of concurrent Classify calls.

Requests wait in a bounded queue; a worker thread (``workers`` of them) takes the first waiting request, keeps collecting
whole requests for at most ``max_delay_ms`` or until ``max_batch_size`` samples are gathered, and makes
one model call for all of them with the version served at that moment. A request is never split, so
all its samples are answered by the same version (one larger than ``max_batch_size`` runs alone).
If a batch fails on one request's bad input, each request of the batch is retried alone so only the
faulty one fails. With batching disabled, each call runs the model directly in its own thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from service.errors import ResourceExhausted, Unavailable

if TYPE_CHECKING:
    from model.samples import Prediction, Sample
    from service.metrics import ServiceMetrics
    from service.serving import ModelSlot

log = logging.getLogger(__name__)

Answer = tuple[int, list["Prediction"]]
"""(version number that answered, one prediction per sample)."""


@dataclass
class _Pending:
    samples: Sequence["Sample"]
    top_k: int
    enqueued: float
    future: "Future[Answer]" = field(default_factory=Future)


def predict_now(slot: "ModelSlot", samples: Sequence["Sample"], top_k: int) -> Answer:
    served = slot.current
    return served.number, served.predict(samples, top_k)


class ClassifyBatcher:
    """Groups concurrent requests into model calls. ``submit`` blocks until the answer is ready."""

    def __init__(self, slot: "ModelSlot", metrics: "ServiceMetrics", *, max_batch_size: int,
                 max_delay_ms: float, max_queue: int, workers: int = 1) -> None:
        self._slot = slot
        self._metrics = metrics
        self._max_batch = max_batch_size
        self._max_delay = max_delay_ms / 1000.0
        self._queue: "queue.Queue[_Pending | None]" = queue.Queue(maxsize=max_queue)
        self._closed = False
        self._threads = [threading.Thread(target=self._run, name=f"mcil-batcher-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, samples: Sequence["Sample"], top_k: int, timeout: float | None = None) -> Answer:
        if self._closed:
            raise Unavailable("the daemon is shutting down")
        pending = _Pending(samples, top_k, time.perf_counter())
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            raise ResourceExhausted("too many Classify requests are waiting; retry later") from None
        self._gauge()
        return pending.future.result(timeout=timeout)

    def close(self) -> None:
        """Answer what is queued, then stop the worker."""
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=30)

    # -- worker --------------------------------------------------------------------------------------
    def _gauge(self) -> None:
        try:
            self._metrics["mcil_classify_queue_depth"].set(self._queue.qsize())
        except Exception:  # noqa: BLE001 - metrics never fail a request
            pass

    def _run(self) -> None:
        carry: _Pending | None = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is None:
                self._drain()
                return
            batch = [first]
            size = len(first.samples)
            deadline = first.enqueued + self._max_delay
            stop = False
            while size < self._max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True  # this worker's stop signal
                    break
                if size + len(nxt.samples) > self._max_batch:
                    carry = nxt  # starts the next batch; requests are never split
                    break
                batch.append(nxt)
                size += len(nxt.samples)
            self._gauge()
            self._answer(batch)
            if stop:
                if carry is not None:
                    self._answer([carry])
                self._drain()
                return

    def _drain(self) -> None:
        """Answer every queued request; stop signals meant for other workers are put back."""
        signals = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                signals += 1
            else:
                self._answer([item])
        for _ in range(signals):
            self._queue.put(None)

    def _answer(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        for p in batch:
            delay = started - p.enqueued
            # _observe calls the lambda at once, so it sees this iteration's delay.
            self._observe(lambda: self._metrics["mcil_classify_queue_delay_seconds"].observe(delay))  # noqa: B023
        top_k = max(p.top_k for p in batch)
        samples = [s for p in batch for s in p.samples]
        try:
            version, predictions = predict_now(self._slot, samples, top_k)
        except Exception as exc:  # noqa: BLE001 - split the blame below
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            for p in batch:  # one request's bad input must not fail its neighbours
                self._answer([p])
            return
        self._observe(lambda: self._metrics["mcil_classify_batch_size"].observe(len(samples)))
        offset = 0
        for p in batch:
            mine = predictions[offset : offset + len(p.samples)]
            offset += len(p.samples)
            if p.top_k < top_k:
                mine = [_truncate(pred, p.top_k) for pred in mine]
            p.future.set_result((version, mine))

    @staticmethod
    def _observe(action: Callable[[], object]) -> None:
        try:
            action()
        except Exception:  # noqa: BLE001 - metrics never fail a request
            log.debug("metrics: cannot record a batch", exc_info=True)


def _truncate(pred: "Prediction", k: int) -> "Prediction":
    """The first ``k`` classes of ``pred`` (a ``model.samples.Prediction`` or a ``serving.head.Answer``)."""
    return type(pred)(pred.classes[:k], pred.scores[:k], pred.path, pred.unknown)
