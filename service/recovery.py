"""Start-up recovery: make the state directory tell one story after a crash at any instruction.

A commit is three steps (``LearningPipeline._commit``, service/learning.py): the version directory gets its final name, then
``current`` is replaced (the commit point), then the job's record says ``succeeded``. A crash
(kill -9, power loss) can stop it between any two of them. At start-up:

    crash before the rename      the ``.tmp-*`` directory is deleted (``StateStore.open``)
    between rename and current   the version was never served: the directory is **discarded**, the
                                 job is recorded failed (interrupted)
    between current and record   the version is served: the job is recorded **succeeded**
    before retention pruned      the oldest versions beyond ``retention.max_versions`` are pruned

We discard rather than roll forward because ``current`` is the one commit point the daemon documents:
a client that saw the job still running when the daemon died was never told it committed, and
serving a model nobody saw committed would change answers behind the operator's back. Retrying the
upload (same ``request_id``) learns it again; the job is reproducible (``seed_learning``).

A version above ``current`` whose job record says ``succeeded`` is one the operator rolled back
from: it stays (Rollback can serve it again). A version whose job record was pruned stays too: it
was committed long ago.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.store import StateStore

log = logging.getLogger(__name__)


def version_job_id(store: "StateStore", number: int) -> str | None:
    """The job id in a version's ``version.json`` (``None`` if it cannot be read)."""
    try:
        data = json.loads((store.version_dir(number) / "version.json").read_text())
    except (OSError, ValueError):
        return None
    job_id = data.get("job_id") if isinstance(data, dict) else None
    return job_id if isinstance(job_id, str) else None


def enforce_retention(store: "StateStore", max_versions: int) -> list[int]:
    """Prune at start-up what a crash between a commit and its pruning left above ``max_versions``.
    Kept: the served version and the newest other one (the version the last commit replaced, or the
    one a rollback left), as a commit keeps them."""
    current = store.current_version()
    others = [n for n in store.version_numbers() if n != current]
    return store.prune(max_versions, protect=others[-1:])


def discard_uncommitted_versions(store: "StateStore") -> list[int]:
    """Delete every version directory that a crash left between its rename and ``current`` (see the
    module docstring); returns their numbers. Call before the job records are recovered."""
    current = store.current_version()
    records = {r["job_id"]: r for r in store.read_jobs()}
    discarded = []
    for number in store.version_numbers():
        if number <= current:
            continue
        job_id = version_job_id(store, number)
        record = records.get(job_id) if job_id else None
        if record is None or record.get("state") == "succeeded":
            continue  # rolled back from, or committed long before its record was pruned
        log.warning("discarding version %d: job %s stopped before it became the served version", number, job_id)
        store.remove_version(number)
        discarded.append(number)
    return discarded

