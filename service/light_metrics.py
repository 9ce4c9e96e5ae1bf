"""The serving process's ``/metrics`` (``service/light.py``): its own series and its learner's, as one page.

The serving process answers Classify and sees every rpc first, so the request series
(``mcil_requests_total``, ``mcil_request_duration_seconds``, ``mcil_auth_failures_total``) and the
Classify series (``mcil_classify_*``) are its own; everything else (the model, versions, jobs, the
continual-learning figures) is the learner's, read from the learner's own endpoint on a private
loopback port at each scrape and served beside them; each family comes from one process only. The
``process_*`` and ``python_*`` series are the serving process's own (the process that is always
there); the learner's ``process_*`` series are served renamed ``mcil_learner_process_*``
(``mcil_learner_process_resident_memory_bytes``: the learner child's memory). A learner that does
not answer within ``TIMEOUT_SECONDS`` (it is restarting) leaves its series out of that scrape, and
Prometheus sees them as gaps, not as zeros; a learner put to sleep (``server.learner_idle_seconds``)
is different: its page, read just before (:meth:`MetricsPage.hold`), is served while it sleeps
(nothing changes its state then), but for its process series (there is no such process then).
"""

from __future__ import annotations

import logging
import urllib.request
from typing import TYPE_CHECKING, Any, Callable, Iterator

from service.metrics import LEARNER_PREFIX

if TYPE_CHECKING:
    from service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

OWN = ("mcil_requests", "mcil_request_duration_seconds", "mcil_auth_failures", "mcil_classify_")
"""Families (as prometheus_client's parser names them: counters without ``_total``) the serving process owns."""
PROCESS = ("process_", "python_")
"""Families about a process: the serving process's own are served as they are, the learner's renamed
(``mcil_learner_process_*``; its ``python_*`` left out), and not while it sleeps."""
TIMEOUT_SECONDS = 2.0


class MetricsPage:
    """What ``/metrics`` renders (``MetricsEndpoint`` calls :meth:`render`): each family once."""

    def __init__(self, own: "ServiceMetrics", learner_url: str, asleep: Callable[[], bool] = lambda: False) -> None:
        """``asleep``: whether the learner sleeps now (then the page :meth:`hold` read is served)."""
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Families(own.registry, keep=True))  # this process's own series only
        self.learner = _LearnerSeries(learner_url, asleep)
        self.registry.register(self.learner)

    def hold(self) -> None:
        """Reads the learner's page now, to serve while it sleeps; raises RuntimeError when it cannot
        (then the learner is not put to sleep: an older page would show an older state)."""
        page = self.learner.read()
        if page is None:
            raise RuntimeError("the learner's metrics page cannot be read now")
        self.learner.held = page

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


class _Families:
    """The families of ``registry`` this process owns (``keep``) or not."""

    def __init__(self, registry: Any, keep: bool) -> None:
        self.source, self.keep = registry, keep

    def collect(self) -> Iterator[Any]:
        for family in self.source.collect():
            if family.name.startswith(OWN + PROCESS) == self.keep:
                yield family


class _LearnerSeries:
    """The learner's series but this process's own (module docstring)."""

    def __init__(self, url: str, asleep: Callable[[], bool]) -> None:
        self.url = url
        self.asleep = asleep
        self.held: list[Any] = []  # the page read before the learner went to sleep
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy

    def read(self) -> list[Any] | None:
        """The learner's families but this process's own; None when it does not answer."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with self._opener.open(self.url, timeout=TIMEOUT_SECONDS) as reply:
                families = list(text_string_to_metric_families(reply.read().decode("utf-8")))
        except Exception as exc:  # noqa: BLE001 - a learner restarting: its series are left out this scrape
            log.debug("the learner's metrics are not there this scrape: %s", exc)
            return None
        return [_renamed(family) if family.name.startswith("process_") else family for family in families
                if not family.name.startswith(OWN + ("python_",))]

    def collect(self) -> Iterator[Any]:
        if self.asleep():
            yield from (family for family in self.held if not family.name.startswith(LEARNER_PREFIX))
            return
        yield from self.read() or []


def _renamed(family: Any) -> Any:
    """A parsed family of the learner's process, as ``mcil_learner_<name>``."""
    from prometheus_client import Metric

    renamed = Metric(LEARNER_PREFIX + family.name, f"The learner child's {family.documentation[:1].lower()}"
                     f"{family.documentation[1:]}", family.type, family.unit)
    renamed.samples = [sample._replace(name=LEARNER_PREFIX + sample.name) for sample in family.samples]
    return renamed
