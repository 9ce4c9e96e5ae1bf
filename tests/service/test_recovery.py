"""Start-up recovery: a version left between its rename and ``current`` is discarded; versions that
were served (or rolled back from) stay."""

from __future__ import annotations

from pathlib import Path

from service.recovery import discard_uncommitted_versions, enforce_retention
from service.store import StateStore, VersionMeta


def _meta(number: int) -> VersionMeta:
    return VersionMeta(version=number, created_at=1.0, job_id=f"job{number}", preset="tiny", strategy="mcil",
                       tasks=(("a",),), held_out_files=(), held_out_counts=())


def _save(directory: Path) -> None:
    (directory / "learner.json").write_text("{}")


def _job(store: StateStore, number: int, state: str) -> None:
    store.write_job({"job_id": f"job{number}", "created_at": float(number), "state": state})


def test_a_version_renamed_but_never_served_is_discarded(store: StateStore) -> None:
    for n in (1, 2):
        store.write_version(_meta(n), _save, {})
        _job(store, n, "succeeded")
    store.set_current(2)
    store.write_version(_meta(3), _save, {})  # the crash: renamed, `current` not moved
    _job(store, 3, "running")
    assert discard_uncommitted_versions(store) == [3]
    assert store.version_numbers() == [1, 2] and store.current_version() == 2


def test_versions_rolled_back_from_or_without_a_record_stay(store: StateStore) -> None:
    for n in (1, 2, 3):
        store.write_version(_meta(n), _save, {})
    _job(store, 2, "succeeded")  # version 3's record was pruned long ago
    store.set_current(1)  # rolled back
    assert discard_uncommitted_versions(store) == []
    assert store.version_numbers() == [1, 2, 3]


def test_a_failed_jobs_version_is_discarded_even_below_nothing_served(store: StateStore) -> None:
    store.write_version(_meta(1), _save, {})
    _job(store, 1, "failed")  # recorded failed by an earlier daemon that did not clean up
    assert discard_uncommitted_versions(store) == [1]
    assert store.version_numbers() == [] and store.current_version() == 0


def test_retention_a_crash_kept_from_happening_is_enforced_at_start(store: StateStore) -> None:
    for n in (1, 2, 3, 4):
        store.write_version(_meta(n), _save, {})
    store.set_current(4)  # committed, then killed before pruning
    assert enforce_retention(store, max_versions=2) == [1, 2]
    assert store.version_numbers() == [3, 4]
    store.write_version(_meta(5), _save, {})
    store.set_current(4)  # rolled back from 5: both stay, the oldest goes
    assert enforce_retention(store, max_versions=2) == [3]
    assert store.version_numbers() == [4, 5]
