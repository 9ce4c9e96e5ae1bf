"""TensorRT engine files: what an engine is keyed by, where it lives, and when it must be rebuilt.

An engine (a serialized TensorRT plan) is only valid for the TensorRT version that built it, the GPU
architecture (compute capability) it was tuned on, the exact ONNX file it was parsed from, its
precision and its optimisation profiles. :class:`EngineKey` holds those; the plan's file name ends in
a digest of the key, and ``engines.json`` next to the manifest records, per segment, the key and the
plan's SHA-256. A segment whose recorded key differs from the wanted one, or whose plan is missing or
changed, is rebuilt; the others are reused. This module imports nothing from TensorRT, so the cache
logic is tested on machines without it; the builder is passed in (see :mod:`export.tensorrt_runner`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from export.errors import ManifestError
from export.manifest import Manifest, SegmentEntry, file_sha256

ENGINE_INDEX = "engines.json"
TIMING_CACHE = "timing.cache"

log = logging.getLogger("export")


@dataclass(frozen=True)
class Profile:
    """One optimisation profile: the batch sizes an engine accepts (``min <= opt <= max``)."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"profile: need 1 <= min <= opt <= max, got {self.min}:{self.opt}:{self.max}")

    @classmethod
    def parse(cls, text: str) -> "Profile":
        """``"1:8:32"`` -> ``Profile(1, 8, 32)``."""
        parts = text.split(":")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"profile: expected MIN:OPT:MAX batch sizes, got {text!r}")
        return cls(*(int(p) for p in parts))

    def covers(self, batch: int) -> bool:
        return self.min <= batch <= self.max


DEFAULT_PROFILES = (Profile(1, 8, 32),)
"""Classify serves batches of 1 to 32 (the daemon's batcher); 8 is the typical size tuned for."""


ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def profile_shapes(entry: SegmentEntry, profile: Profile) -> dict[str, ShapeRange]:
    """Per input of ``entry``: (min, opt, max) shapes; ``batch`` from the profile, ``sequence`` from 1 to
    the segment's ``max_sequence`` (tuned for :data:`SEQUENCE_OPT` tokens)."""
    shapes = {}
    for spec in entry.inputs:
        ranges = []
        for d in spec.shape:
            if d == "batch":
                ranges.append((profile.min, profile.opt, profile.max))
            elif d == "sequence":
                if entry.max_sequence is None:
                    raise ManifestError(f"{entry.name}.max_sequence", "a sequence dimension needs a maximum")
                ranges.append((1, min(SEQUENCE_OPT, entry.max_sequence), entry.max_sequence))
            elif isinstance(d, int):
                ranges.append((d, d, d))
            else:
                raise ManifestError(f"{entry.name}.{spec.name}.shape", f"no profile rule for dimension {d!r}")
        low, opt, high = (tuple(r[i] for r in ranges) for i in range(3))
        shapes[spec.name] = (low, opt, high)
    return shapes


SEQUENCE_OPT = 16
"""Token count the engines of variable-length text segments are tuned for (short class prompts)."""


@dataclass(frozen=True)
class EngineKey:
    segment: str
    onnx_sha256: str
    precision: str
    tensorrt_version: str
    compute_capability: str  # "8.9"
    profiles: tuple[Profile, ...]

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def plan_name(self) -> str:
        cc = self.compute_capability.replace(".", "")
        return f"{self.segment}.{self.precision}.sm{cc}.trt{self.tensorrt_version}.{self.digest()[:12]}.plan"


def engine_keys(
    manifest: Manifest, precision: str, tensorrt_version: str, compute_capability: str,
    profiles: tuple[Profile, ...] = DEFAULT_PROFILES,
) -> dict[str, EngineKey]:
    """The wanted key of every segment that gets an engine (external segments do not)."""
    keys = {}
    for s in manifest.segments:
        if s.is_external:
            continue
        if precision not in s.files:
            raise ManifestError(f"{s.name}.files", f"no {precision} ONNX file to build an engine from")
        keys[s.name] = EngineKey(s.name, s.files[precision].sha256, precision, tensorrt_version,
                                 compute_capability, tuple(profiles))
    return keys


BuildEngine = Callable[[Path, SegmentEntry, EngineKey, Path], bytes]
"""``(onnx path, segment, key, timing cache path) -> serialized plan``."""


def ensure_engines(
    manifest: Manifest, folder: Path, keys: dict[str, EngineKey], build: BuildEngine, *, force: bool = False
) -> tuple[dict[str, Path], list[str]]:
    """Builds the engines whose key changed (or all, with ``force``); returns plan paths and the rebuilt names."""
    folder = Path(folder)
    index_path = folder / ENGINE_INDEX
    index: dict[str, dict[str, object]] = json.loads(index_path.read_text()) if index_path.is_file() else {}
    plans: dict[str, Path] = {}
    rebuilt = []
    for name, key in keys.items():
        recorded = index.get(name, {})
        plan = folder / key.plan_name()
        current = (
            not force
            and recorded.get("key") == json.loads(json.dumps(asdict(key)))
            and plan.is_file()
            and recorded.get("plan_sha256") == file_sha256(plan)
        )
        if not current:
            entry = manifest.segment(name)
            log.info("building TensorRT engine %s", plan.name)
            data = build(folder / entry.files[key.precision].path, entry, key, folder / TIMING_CACHE)
            old = recorded.get("plan")
            if isinstance(old, str) and old != plan.name:
                (folder / old).unlink(missing_ok=True)  # the stale engine
            plan.write_bytes(data)
            index[name] = {"key": asdict(key), "plan": plan.name, "plan_sha256": file_sha256(plan)}
            index_path.write_text(json.dumps(index, indent=1))  # after each engine: an interrupted build resumes
            rebuilt.append(name)
        plans[name] = plan
    return plans, rebuilt
