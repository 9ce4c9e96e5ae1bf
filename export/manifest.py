"""The manifest written next to the exported segments (``manifest.json``), and its checks.

It records what a runner needs without importing the model (segment order, input/output names,
dtypes and shapes with named dynamic dimensions) and what decides whether the files are still valid
for a backbone (preset, a SHA-256 of each segment's frozen weights, hashes of the ONNX files, the
opset and the exporter versions). Example, abridged::

    {"format": 1, "preset": "tiny", "opset": 18,
     "versions": {"torch": "2.11.0", "onnx": "1.23.2", "onnxscript": "0.7.2"},
     "source_weights": {"clip": {"path": "/models/ViT-B-16.pt", "sha256": "..."}},
     "segments": [{"name": "image.stem", "tower": "image", "role": "stem", "index": null,
                   "weights_sha256": "...",
                   "inputs": [{"name": "images", "dtype": "float32", "shape": ["batch", 3, 32, 32]}],
                   "outputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 17, 64]}],
                   "files": {"fp32": {"path": "image.stem.fp32.onnx", "sha256": "..."}}}, ...]}

Only float32 tensors change dtype in a ``fp16`` file; integer inputs (token ids) keep theirs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from export.errors import ManifestError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "fp16")
Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    """A segment input or output. ``shape`` holds ints for fixed dimensions, names for dynamic ones."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        if not self.name:
            raise ManifestError("name", "empty tensor name")
        for d in self.shape:
            if not isinstance(d, (int, str)) or isinstance(d, bool):
                raise ManifestError(f"{self.name}.shape", f"dimension {d!r} is neither an int nor a name")


@dataclass(frozen=True)
class SegmentFile:
    path: str  # relative to the manifest's folder
    sha256: str


@dataclass(frozen=True)
class SegmentEntry:
    name: str
    tower: str
    role: str
    index: int | None
    weights_sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    files: dict[str, SegmentFile] = field(default_factory=dict)
    # role "external": an encoder that is already ONNX keeps running its own files (copied here for
    # reference and for other runtimes); it has no per-precision export.
    external_files: tuple[SegmentFile, ...] = ()
    # The longest token sequence, for segments with a ``sequence`` dimension (text padded to the longest).
    max_sequence: int | None = None

    @property
    def is_external(self) -> bool:
        return self.role == "external"

    def __post_init__(self) -> None:
        for precision in self.files:
            if precision not in PRECISIONS:
                raise ManifestError(f"{self.name}.files", f"unknown precision {precision!r}; one of {PRECISIONS}")

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


@dataclass(frozen=True)
class Manifest:
    preset: str
    opset: int
    versions: dict[str, str]
    segments: tuple[SegmentEntry, ...]
    source_weights: dict[str, dict[str, str]] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.format != FORMAT_VERSION:
            raise ManifestError("format", f"version {self.format} is not the supported {FORMAT_VERSION}")
        names = [s.name for s in self.segments]
        if len(set(names)) != len(names):
            raise ManifestError("segments", "duplicate segment names")

    def segment(self, name: str) -> SegmentEntry:
        for s in self.segments:
            if s.name == name:
                return s
        raise ManifestError("segments", f"no segment named {name!r}")

    def precisions(self) -> set[str]:
        """Precisions every segment has a file for."""
        sets = [set(s.files) for s in self.segments if not s.is_external]
        return set.intersection(*sets) if sets else set()

    # -- files ------------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)  # readers never see a half-written manifest
        return path

    @classmethod
    def load(cls, folder: Path) -> "Manifest":
        path = Path(folder) / MANIFEST_NAME
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ManifestError("manifest", f"{path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise ManifestError("manifest", f"{path} is not valid JSON: {exc}") from None
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Any) -> "Manifest":
        try:
            segments = tuple(_segment_from_dict(s) for s in raw["segments"])
            return cls(
                preset=str(raw["preset"]),
                opset=int(raw["opset"]),
                versions={str(k): str(v) for k, v in raw["versions"].items()},
                segments=segments,
                source_weights={str(k): dict(v) for k, v in raw.get("source_weights", {}).items()},
                format=int(raw["format"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ManifestError("manifest", f"missing or malformed entry: {exc!r}") from None

    # -- checks -----------------------------------------------------------------------------------
    def check_files(self, folder: Path, precision: str) -> None:
        """Every segment has a ``precision`` file in ``folder`` whose bytes match its recorded hash."""
        for i, s in enumerate(self.segments):
            if s.is_external:
                for j, f in enumerate(s.external_files):
                    _check_file(Path(folder) / f.path, f.sha256, f"segments[{i}].external_files[{j}]")
                continue
            entry = s.files.get(precision)
            if entry is None:
                raise ManifestError(f"segments[{i}].files", f"{s.name} has no {precision} file")
            _check_file(Path(folder) / entry.path, entry.sha256, f"segments[{i}].files.{precision}")

    def check_weights(self, preset: str, weights: list[tuple[str, str]]) -> None:
        """The manifest was made for ``preset`` and exactly these ``(segment name, weights hash)`` pairs."""
        if self.preset != preset:
            raise ManifestError("preset", f"exported for {self.preset!r}, backbone is {preset!r}")
        names = [s.name for s in self.segments]
        if names != [n for n, _ in weights]:
            raise ManifestError("segments", f"segment order {names} does not match the backbone's {[n for n, _ in weights]}")
        for i, (s, (_, digest)) in enumerate(zip(self.segments, weights)):
            if s.weights_sha256 != digest:
                raise ManifestError(f"segments[{i}].weights_sha256", f"{s.name} was exported from other weights")


def _check_file(path: Path, sha256: str, field: str) -> None:
    if not path.is_file():
        raise ManifestError(field, f"{path} is missing")
    if file_sha256(path) != sha256:
        raise ManifestError(field, f"{path} changed since export")


def _segment_from_dict(raw: dict[str, Any]) -> SegmentEntry:
    def spec(t: dict[str, Any]) -> TensorSpec:
        return TensorSpec(str(t["name"]), str(t["dtype"]), tuple(t["shape"]))

    index = raw.get("index")
    return SegmentEntry(
        name=str(raw["name"]),
        tower=str(raw["tower"]),
        role=str(raw["role"]),
        index=None if index is None else int(index),
        weights_sha256=str(raw["weights_sha256"]),
        inputs=tuple(spec(t) for t in raw["inputs"]),
        outputs=tuple(spec(t) for t in raw["outputs"]),
        files={str(k): SegmentFile(str(v["path"]), str(v["sha256"])) for k, v in raw["files"].items()},
        external_files=tuple(SegmentFile(str(v["path"]), str(v["sha256"])) for v in raw.get("external_files", [])),
        max_sequence=None if raw.get("max_sequence") is None else int(raw["max_sequence"]),
    )


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
