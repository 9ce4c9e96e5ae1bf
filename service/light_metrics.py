"""The serving process's ``/metrics`` (``service/light.py``): its own series and its learner's, as one page.

The serving process answers Classify and sees every rpc first, so the request series
(``mcil_requests_total``, ``mcil_request_duration_seconds``, ``mcil_auth_failures_total``) and the
Classify series (``mcil_classify_*``) are its own; everything else (the model, versions, jobs, the
continual-learning figures) is the learner's, read from the learner's own endpoint on a private
loopback port at each scrape and served beside them. A learner that does not answer within
``TIMEOUT_SECONDS`` (it is restarting) leaves its series out of that scrape, and Prometheus sees
them as gaps, not as zeros.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from typing import Any, Iterator

log = logging.getLogger(__name__)

OWN = ("mcil_requests", "mcil_request_duration_seconds", "mcil_auth_failures", "mcil_classify_")
"""Families (as prometheus_client's parser names them: counters without ``_total``) the serving process owns."""
TIMEOUT_SECONDS = 2.0


class LearnerSeries:
    """A collector of the learner's series but the serving process's own (module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def collect(self) -> Iterator[Any]:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(self.url, timeout=TIMEOUT_SECONDS) as reply:
                text = reply.read().decode("utf-8")
        except (urllib.error.URLError, OSError) as exc:
            log.debug("the learner's metrics are not there this scrape: %s", exc)
            return
        for family in text_string_to_metric_families(text):
            if not family.name.startswith(OWN):
                yield family

    def describe(self) -> list[Any]:
        return []  # the learner's families are known at scrape time only
