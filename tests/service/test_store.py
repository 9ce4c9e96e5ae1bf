"""The state directory: atomic versions, manifest checks, the current pointer, held-out files, pruning."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from model.samples import LabeledSample
from service.errors import FailedPrecondition, NotFound
from service.store import CorruptVersion, StateStore, VersionMeta


def _meta(number: int, held: tuple[str, ...] = ()) -> VersionMeta:
    return VersionMeta(version=number, created_at=1.0, job_id=f"job{number}", preset="tiny", strategy="mcil",
                       tasks=(("a", "b"),), held_out_files=held, held_out_counts=tuple(1 for _ in held),
                       figures={"av": {"last_accuracy": 50.0}})


def _save(directory: Path) -> None:
    (directory / "learned.safetensors").write_bytes(b"weights" * 100)
    (directory / "learner.json").write_text("{}")


def test_write_verify_and_point(store: StateStore) -> None:
    assert store.current_version() == 0 and store.version_numbers() == []
    store.write_version(_meta(1), _save, {"record": {}})
    assert store.current_version() == 0  # written is not yet committed
    store.set_current(1)
    assert store.current_version() == 1
    meta = store.verify(1)
    assert meta == _meta(1) and meta.classes == ["a", "b"]
    assert store.read_evaluation(1) == {"record": {}}
    assert not list(store.versions_dir.glob(".tmp-*"))
    with pytest.raises(FailedPrecondition):
        store.write_version(_meta(1), _save, {})


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_manifest", "extra_file", "missing_file"])
def test_damaged_versions_are_detected(store: StateStore, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    store.write_version(_meta(1), _save, {})
    store.write_version(_meta(2), _save, {})
    d = store.version_dir(2)
    if damage == "truncate":
        (d / "learned.safetensors").write_bytes(b"weights")
    elif damage == "flip":
        data = bytearray((d / "learned.safetensors").read_bytes())
        data[10] ^= 0xFF
        (d / "learned.safetensors").write_bytes(bytes(data))
    elif damage == "no_manifest":
        (d / "manifest.json").unlink()
    elif damage == "extra_file":
        (d / "stray.bin").write_bytes(b"x")
    else:
        (d / "learner.json").unlink()
    with pytest.raises(CorruptVersion):
        store.verify(2)
    with caplog.at_level(logging.ERROR):
        assert [m.version for m in store.list_valid()] == [1]
    assert "skipping version 2" in caplog.text


def test_leftovers_of_a_crash_are_removed_and_the_lock_is_exclusive(tmp_path: Path) -> None:
    first = StateStore(tmp_path / "s")
    first.open()
    (first.versions_dir / ".tmp-000007-dead").mkdir()
    (first.versions_dir / ".tmp-000007-dead" / "learned.safetensors").write_bytes(b"half")
    second = StateStore(tmp_path / "s")
    with pytest.raises(FailedPrecondition, match="in use"):
        second.open()
    first.close()
    second.open()
    assert not list(second.versions_dir.glob(".tmp-*"))
    second.close()


def test_held_out_round_trip_and_checksums(store: StateStore) -> None:
    rng = np.random.default_rng(0)
    samples = [
        LabeledSample(image=rng.integers(0, 255, (5, 6, 3), dtype=np.uint8), label="a"),
        LabeledSample(audio=rng.uniform(-1, 1, 100).astype(np.float32), sample_rate=16000, label="b"),
        LabeledSample(image=rng.random((4, 4)).astype(np.float32), audio=np.zeros(10, np.float32),
                      sample_rate=8000, label="a"),
    ]
    store.write_held_out("t1.safetensors", samples)
    back = store.read_held_out("t1.safetensors")
    assert [s.label for s in back] == ["a", "b", "a"]
    assert back[0].audio is None and back[1].image is None and back[1].sample_rate == 16000
    for a, b in zip(samples, back):
        for field in ("image", "audio"):
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None and y is None) or np.array_equal(x, y)
    store.write_version(_meta(1, held=("t1.safetensors",)), _save, {})
    store.verify(1)
    (store.held_out_dir / "t1.safetensors").write_bytes(b"changed")
    with pytest.raises(CorruptVersion, match="held-out"):
        store.verify(1)


def test_prune_keeps_the_served_version(store: StateStore) -> None:
    for n in (1, 2, 3, 4):
        store.write_held_out(f"h{n}.safetensors", [LabeledSample(image=np.zeros((2, 2), np.uint8), label="a")])
        store.write_version(_meta(n, held=(f"h{n}.safetensors",)), _save, {})
    store.set_current(1)
    removed = store.prune(keep=2)
    assert removed == [2, 3] and store.version_numbers() == [1, 4]
    assert sorted(p.name for p in store.held_out_dir.iterdir()) == ["h1.safetensors", "h4.safetensors"]
    with pytest.raises(FailedPrecondition):
        store.remove_version(1)
    with pytest.raises(NotFound):
        store.require_version(3)


def test_job_records(store: StateStore) -> None:
    store.write_job({"job_id": "j1", "created_at": 2.0, "state": "running"})
    store.write_job({"job_id": "j0", "created_at": 1.0, "state": "succeeded"})
    (store.jobs_dir / "broken.json").write_text("{")
    assert [j["job_id"] for j in store.read_jobs()] == ["j0", "j1"]
    store.prune_jobs(keep=1)
    assert [j["job_id"] for j in store.read_jobs()] == ["j1"]


def test_prune_keeps_the_version_a_commit_replaced(store: StateStore) -> None:
    for n in (1, 2, 3, 4):
        store.write_version(_meta(n), _save, {})
    store.set_current(4)
    assert store.prune(keep=2, protect=(2,)) == [1, 3]
    assert store.version_numbers() == [2, 4]
