"""The state directory: committed model versions, held-out examples, job records.

Layout (docs/service.md)::

    STATE_DIR/
      LOCK                       held (flock) by the running daemon: one daemon per directory
      current                    the served version number; replaced atomically (the commit point)
      versions/000003/           one committed version, never modified after its rename
        learner.json, learned.safetensors, prototypes.safetensors[, head.safetensors, strategy.safetensors]
        evaluation.json          the continual-evaluation state (accuracy matrices, z, b, ...)
        version.json             number, time, job, classes per task, figures, held-out files used
        manifest.json            size and SHA-256 of every other file; written last
      versions/.tmp-000004-*/    a version being written (deleted at start-up if a crash left it)
      held_out/<name>.safetensors  held-out examples of one task (images, audio, labels)
      jobs/<job_id>.json         job records

Writing a version: files go into a temporary directory, are fsynced, the manifest is written last,
the directory is renamed to its final name and the parent fsynced; then ``current`` is replaced
(write ``current.tmp``, fsync, rename, fsync the directory). A crash at any moment leaves either the
old ``current`` or the new one, each pointing to a complete directory. A version whose manifest is
missing or does not match its files is reported and skipped, never half-loaded. Weights are
safetensors; nothing is pickled.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Mapping, Sequence

from service.errors import FailedPrecondition, NotFound
from service.failpoints import failpoint

if TYPE_CHECKING:
    from model.samples import LabeledSample

log = logging.getLogger(__name__)

VERSION_FORMAT = 1
MANIFEST = "manifest.json"
VERSION_META = "version.json"
EVALUATION = "evaluation.json"


class CorruptVersion(Exception):
    """A version directory is incomplete or does not match its manifest (message says what)."""


@dataclass(frozen=True)
class VersionMeta:
    """What ``version.json`` records about one committed version."""

    version: int
    created_at: float
    job_id: str
    preset: str
    strategy: str
    tasks: tuple[tuple[str, ...], ...]  # class names per task, in learning order
    held_out_files: tuple[str, ...]  # one per taught task (not received), names under held_out/
    held_out_counts: tuple[int, ...]
    figures: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # {path: {figure: value}}
    district: Mapping[str, Any] = field(default_factory=dict)  # the last district merge: round, rooms

    @property
    def classes(self) -> list[str]:
        return [c for task in self.tasks for c in task]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": VERSION_FORMAT,
            "version": self.version,
            "created_at": self.created_at,
            "job_id": self.job_id,
            "preset": self.preset,
            "strategy": self.strategy,
            "tasks": [list(t) for t in self.tasks],
            "held_out_files": list(self.held_out_files),
            "held_out_counts": list(self.held_out_counts),
            "figures": {k: dict(v) for k, v in self.figures.items()},
            "district": dict(self.district),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VersionMeta":
        if data.get("format") != VERSION_FORMAT:
            raise CorruptVersion(f"unsupported version.json format {data.get('format')!r}")
        try:
            return cls(
                version=int(data["version"]),
                created_at=float(data["created_at"]),
                job_id=str(data["job_id"]),
                preset=str(data["preset"]),
                strategy=str(data["strategy"]),
                tasks=tuple(tuple(str(c) for c in t) for t in data["tasks"]),
                held_out_files=tuple(str(f) for f in data["held_out_files"]),
                held_out_counts=tuple(int(n) for n in data["held_out_counts"]),
                figures=dict(data.get("figures") or {}),
                district=dict(data.get("district") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptVersion(f"version.json: {type(exc).__name__}: {exc}") from None


# ----------------------------------------------------------------------------------------------------
# Durable file helpers


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a reader sees the old content or the new, never a mix."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.iterdir()):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(directory)


def _version_name(number: int) -> str:
    return f"{number:06d}"


# ----------------------------------------------------------------------------------------------------
# Held-out examples (safetensors: arrays per sample, labels and sample rates in the metadata)


def save_examples(path: Path, examples: Sequence["LabeledSample"]) -> None:
    """Write labelled samples to one safetensors file (atomically; ``model/example_files.py``)."""
    from model.example_files import encode_examples

    write_atomic(path, encode_examples(examples))


# ----------------------------------------------------------------------------------------------------
# The store


class StateStore:
    """One daemon's state directory. Not thread-safe: the daemon serialises writes under its lock."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.held_out_dir = self.root / "held_out"
        self.jobs_dir = self.root / "jobs"
        self._lock_file: IO[bytes] | None = None

    # -- life cycle ----------------------------------------------------------------------------------
    def open(self) -> None:
        """Create the layout, take the directory lock, remove leftovers of interrupted writes."""
        for d in (self.root, self.versions_dir, self.held_out_dir, self.jobs_dir):
            d.mkdir(parents=True, exist_ok=True)
        lock = open(self.root / "LOCK", "a+b")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise FailedPrecondition(f"state directory {self.root} is in use by another daemon") from None
        self._lock_file = lock
        for leftover in self.versions_dir.glob(".tmp-*"):
            log.warning("removing a version left half-written by an interrupted commit: %s", leftover.name)
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in [*self.root.glob(".*.tmp"), *self.held_out_dir.glob(".*.tmp"), *self.jobs_dir.glob(".*.tmp")]:
            leftover.unlink(missing_ok=True)

    def close(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    # -- versions ------------------------------------------------------------------------------------
    def version_dir(self, number: int) -> Path:
        return self.versions_dir / _version_name(number)

    def version_numbers(self) -> list[int]:
        """Every version directory with a final name (valid or not), ascending."""
        return sorted(int(p.name) for p in self.versions_dir.iterdir() if p.is_dir() and p.name.isdigit())

    def current_version(self) -> int:
        """The number in ``current`` (0 when nothing was committed yet)."""
        return read_current(self.root)

    def set_current(self, number: int) -> None:
        """The commit point: atomically make ``number`` the served version."""
        write_atomic(self.root / "current", f"{number}\n".encode())

    def verify(self, number: int) -> VersionMeta:
        """Check a version directory against its manifest (and its held-out files); its metadata."""
        directory = self.version_dir(number)
        try:
            manifest = json.loads((directory / MANIFEST).read_text())
            files = manifest["files"]
        except FileNotFoundError:
            raise CorruptVersion("manifest.json is missing (incomplete write)") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptVersion(f"manifest.json is unreadable: {exc}") from None
        present = {p.name for p in directory.iterdir() if p.is_file()} - {MANIFEST}
        if set(files) != present:
            raise CorruptVersion(f"files {sorted(present)} do not match the manifest {sorted(files)}")
        for name, entry in files.items():
            path = directory / name
            if path.stat().st_size != entry["size"] or _sha256(path) != entry["sha256"]:
                raise CorruptVersion(f"{name} does not match its checksum")
        try:
            meta = VersionMeta.from_dict(json.loads((directory / VERSION_META).read_text()))
        except ValueError as exc:
            raise CorruptVersion(f"version.json: {exc}") from None
        if meta.version != number:
            raise CorruptVersion(f"version.json says {meta.version}, directory says {number}")
        held = manifest.get("held_out", {})
        for name in meta.held_out_files:
            path = self.held_out_dir / name
            if not path.is_file() or _sha256(path) != held.get(name):
                raise CorruptVersion(f"held-out file {name} is missing or does not match its checksum")
        return meta

    def read_evaluation(self, number: int) -> dict[str, Any]:
        data = json.loads((self.version_dir(number) / EVALUATION).read_text())
        if not isinstance(data, dict):
            raise CorruptVersion("evaluation.json is not an object")
        return data

    def list_valid(self) -> list[VersionMeta]:
        """Metadata of every version that passes :meth:`verify`, ascending (corrupt ones are logged)."""
        out = []
        for number in self.version_numbers():
            try:
                out.append(self.verify(number))
            except CorruptVersion as exc:
                log.error("skipping version %d: %s", number, exc)
        return out

    def write_version(
        self,
        meta: VersionMeta,
        save_learner: Callable[[Path], None],
        evaluation: Mapping[str, Any],
    ) -> Path:
        """Write a complete version directory (not yet current). Returns its final path."""
        final = self.version_dir(meta.version)
        if final.exists():
            raise FailedPrecondition(f"version {meta.version} already exists")
        tmp = self.versions_dir / f".tmp-{_version_name(meta.version)}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            save_learner(tmp)
            (tmp / EVALUATION).write_text(json.dumps(evaluation, sort_keys=True))
            (tmp / VERSION_META).write_text(json.dumps(meta.to_dict(), indent=2, sort_keys=True))
            files = {
                p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir()) if p.is_file()
            }
            held = {name: _sha256(self.held_out_dir / name) for name in meta.held_out_files}
            manifest = {"format": VERSION_FORMAT, "files": files, "held_out": held}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            _fsync_tree(tmp)
            os.rename(tmp, final)
            _fsync_dir(self.versions_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def remove_version(self, number: int) -> None:
        if number == self.current_version():
            raise FailedPrecondition("the served version cannot be removed")
        doomed = self.versions_dir / f".tmp-rm-{_version_name(number)}-{secrets.token_hex(4)}"
        os.rename(self.version_dir(number), doomed)  # atomic: the version disappears at once
        shutil.rmtree(doomed, ignore_errors=True)

    def prune(self, keep: int, protect: Sequence[int] = ()) -> list[int]:
        """Delete the oldest versions beyond ``keep`` and orphaned held-out files. Never deleted: the
        served version and those in ``protect`` (a commit protects the version it replaced, so the
        newest version that was served before stays for Rollback)."""
        kept = {self.current_version(), *protect}
        numbers = self.version_numbers()
        removed = []
        excess = len(numbers) - keep
        for number in numbers:
            if excess <= 0:
                break
            if number not in kept:
                self.remove_version(number)
                removed.append(number)
                excess -= 1
                failpoint("prune.after_remove")
        self.remove_orphan_held_out()
        return removed

    def remove_orphan_held_out(self) -> None:
        used: set[str] = set()
        for number in self.version_numbers():
            try:
                meta = json.loads((self.version_dir(number) / VERSION_META).read_text())
                used.update(meta.get("held_out_files", []))
            except (OSError, ValueError):
                continue
        for path in self.held_out_dir.glob("*.safetensors"):
            if path.name not in used:
                path.unlink(missing_ok=True)

    # -- held-out examples ---------------------------------------------------------------------------
    def write_held_out(self, name: str, examples: Sequence["LabeledSample"]) -> None:
        save_examples(self.held_out_dir / name, examples)

    def read_held_out(self, name: str) -> list["LabeledSample"]:
        from model.example_files import load_examples

        try:
            return load_examples(self.held_out_dir / name)
        except (OSError, ValueError, KeyError) as exc:
            raise CorruptVersion(f"held-out file {name}: {exc}") from None

    # -- jobs ----------------------------------------------------------------------------------------
    def write_job(self, record: Mapping[str, Any]) -> None:
        write_atomic(self.jobs_dir / f"{record['job_id']}.json", json.dumps(record, sort_keys=True).encode())

    def read_jobs(self) -> list[dict[str, Any]]:
        out = []
        for path in self.jobs_dir.glob("*.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                log.error("skipping unreadable job record %s: %s", path.name, exc)
                continue
            if isinstance(data, dict) and "job_id" in data:
                out.append(data)
        return sorted(out, key=lambda d: float(d.get("created_at", 0.0)))

    def prune_jobs(self, keep: int) -> None:
        records = self.read_jobs()
        for record in records[: max(0, len(records) - keep)]:
            (self.jobs_dir / f"{record['job_id']}.json").unlink(missing_ok=True)

    def require_version(self, number: int) -> VersionMeta:
        if number not in self.version_numbers():
            raise NotFound(f"version {number} does not exist")
        try:
            return self.verify(number)
        except CorruptVersion as exc:
            raise FailedPrecondition(f"version {number} is damaged: {exc}") from None


def now() -> float:
    return time.time()


def read_current(root: Path) -> int:
    """The served version number in ``root/current`` (0 when nothing was committed yet)."""
    try:
        text = (Path(root) / "current").read_text().strip()
    except FileNotFoundError:
        return 0
    return int(text) if text.isdigit() else 0
