"""Labelled samples in one safetensors file: how a daemon keeps the held-out examples of a task.

    data = encode_examples(examples)           # bytes, written atomically by service/store.py
    examples = load_examples(path)             # list[LabeledSample], as they were uploaded
    pictures = labelled_pictures(path)         # [(label, picture)], the sounds left unread
    n = count_pictures(path)                   # from the file's header alone

The format: sample ``i``'s picture is the tensor ``"{i}.image"`` (H, W, 3) uint8 and its sound
``"{i}.audio"`` float32, each present when the sample has one; the metadata holds ``labels`` and
``sample_rates`` as JSON lists, in sample order, and ``count``. Nothing is pickled. The daemon's
store writes and reads these files (``held_out/``); the int8 image graph is calibrated on their
pictures (``export/int8.py``), in a process that never imports PyTorch: only :func:`load_examples`
does, for its samples' type.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from model.samples import LabeledSample  # imports PyTorch: only load_examples() needs it at run time


def encode_examples(examples: Sequence["LabeledSample"]) -> bytes:
    """The file's bytes for ``examples``."""
    from safetensors.numpy import save

    tensors: dict[str, Any] = {}
    rates: list[int | None] = []
    for i, ex in enumerate(examples):
        if ex.image is not None:
            tensors[f"{i}.image"] = np.ascontiguousarray(ex.image)
        if ex.audio is not None:
            tensors[f"{i}.audio"] = np.ascontiguousarray(ex.audio, dtype=np.float32)
        rates.append(ex.sample_rate)
    meta = {"labels": json.dumps([ex.label for ex in examples]), "sample_rates": json.dumps(rates),
            "count": str(len(examples))}
    data: bytes = save(tensors, metadata=meta)
    return data


def load_examples(path: Path) -> list["LabeledSample"]:
    """Every sample in the file at ``path``, in order."""
    from safetensors import safe_open

    from model.samples import LabeledSample

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
        labels = json.loads(meta["labels"])
        rates = json.loads(meta["sample_rates"])
        keys = set(f.keys())
        out = []
        for i, (label, rate) in enumerate(zip(labels, rates)):
            image = f.get_tensor(f"{i}.image") if f"{i}.image" in keys else None
            audio = f.get_tensor(f"{i}.audio") if f"{i}.audio" in keys else None
            out.append(LabeledSample(image=image, audio=audio, sample_rate=rate, label=label))
    return out


def labelled_pictures(path: Path) -> list[tuple[str, np.ndarray]]:
    """``(label, picture)`` of every sample with a picture, in order; the sounds are not read."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        labels = json.loads((f.metadata() or {}).get("labels", "[]"))
        keys = set(f.keys())
        return [(str(label), f.get_tensor(f"{i}.image")) for i, label in enumerate(labels) if f"{i}.image" in keys]


def count_pictures(path: Path) -> int:
    """How many samples in the file at ``path`` have a picture (its header only)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return sum(1 for key in f.keys() if key.endswith(".image"))
