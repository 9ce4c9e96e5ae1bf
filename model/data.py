"""Reading an audio-visual class-incremental data set laid out like AV-MNIST.

A data folder holds ``train.csv`` and ``test.csv`` (columns ``label, class_name, audio, image_index``,
optionally ``speaker``, the domain of the domain-incremental benchmark; more are ignored), audio files (WAV/FLAC, paths relative to the folder) and the images as IDX files
(``mnist/images-idx3-ubyte.gz``; any ``*images-idx3-ubyte*`` file under the folder is found).
"""

from __future__ import annotations

import csv
import gzip
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.audio import load_audio_file
from model.samples import LabeledSample


@dataclass(frozen=True)
class Split:
    samples: list[LabeledSample]
    class_names: list[str]  # by label index
    domains: list[str] = field(default_factory=list)  # per sample, its ``speaker`` column ("" if none)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzip-compressed) -> numpy array (uint8 data as in MNIST)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_images(root: Path) -> Path:
    found = sorted(root.rglob("*images-idx3-ubyte*"))
    if not found:
        raise FileNotFoundError(f"{root}: no *images-idx3-ubyte* file")
    return found[0]


def read_class_names(root: Path, split: str = "train") -> list[str]:
    """The class names of ``split`` by label index, from its CSV alone (no image or sound is read)."""
    manifest = Path(root) / f"{split}.csv"
    with manifest.open(newline="") as f:
        names = {int(row["label"]): row["class_name"] for row in csv.DictReader(f)}
    return [names[k] for k in sorted(names)]


def read_split_domains(root: Path, split: str = "train") -> list[str]:
    """The ``speaker`` column of ``split``, per row, from its CSV alone ("" where there is none)."""
    with (Path(root) / f"{split}.csv").open(newline="") as f:
        return [row.get("speaker") or "" for row in csv.DictReader(f)]


def read_split(root: Path, split: str, limit_per_class: int | None = None) -> Split:
    """``split`` is ``train`` or ``test``. ``limit_per_class`` keeps the first n rows of each class."""
    root = Path(root)
    manifest = root / f"{split}.csv"
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest}: missing (expected a folder laid out like AV-MNIST)")
    images = read_idx(_find_images(root))
    samples: list[LabeledSample] = []
    domains: list[str] = []
    kept: dict[int, int] = {}
    # Rows that name the same sound file share its decoded samples (ESC-CIFAR pairs each clip with six
    # or seven photos: 1,200 rows, 192 clips; decoding each row anew held 370 MiB instead of 61).
    sounds: dict[str, tuple[np.ndarray, int]] = {}
    with manifest.open(newline="") as f:
        for row in csv.DictReader(f):
            label = int(row["label"])
            if limit_per_class is not None and kept.get(label, 0) >= limit_per_class:
                continue
            kept[label] = kept.get(label, 0) + 1
            if row["audio"] not in sounds:
                sounds[row["audio"]] = load_audio_file(str(root / row["audio"]))
            wave, rate = sounds[row["audio"]]
            samples.append(LabeledSample(image=images[int(row["image_index"])], audio=wave, sample_rate=rate,
                                         label=row["class_name"]))
            domains.append(row.get("speaker") or "")
    return Split(samples, read_class_names(root, split), domains)
