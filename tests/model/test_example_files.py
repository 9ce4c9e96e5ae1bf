"""``model/example_files.py``: held-out examples on disk, read whole or for their pictures alone.

Samples with a picture, a sound or both go in and come back as they were; the pictures come back
with their labels without the sounds; the count comes from the header; and the module imports no
PyTorch (the int8 calibration child that reads pictures never loads it).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from model.example_files import count_pictures, encode_examples, labelled_pictures, load_examples
from model.samples import LabeledSample


def _examples() -> list[LabeledSample]:
    rng = np.random.Generator(np.random.PCG64(0))
    picture = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    sound = rng.standard_normal(1600).astype(np.float32)
    return [LabeledSample(image=picture, audio=sound, sample_rate=16000, label="bell"),
            LabeledSample(image=picture[::-1].copy(), label="chalk"),
            LabeledSample(audio=sound[:800], sample_rate=8000, label="door")]


def test_examples_come_back_as_they_were(tmp_path: Path) -> None:
    path = tmp_path / "task.safetensors"
    path.write_bytes(encode_examples(_examples()))
    for got, want in zip(load_examples(path), _examples(), strict=True):
        assert (got.label, got.sample_rate) == (want.label, want.sample_rate)
        for a, b in ((got.image, want.image), (got.audio, want.audio)):
            assert (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


def test_pictures_are_read_with_their_labels_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "task.safetensors"
    path.write_bytes(encode_examples(_examples()))
    pictures = labelled_pictures(path)
    assert [label for label, _ in pictures] == ["bell", "chalk"]
    assert np.array_equal(pictures[1][1], _examples()[1].image)
    assert count_pictures(path) == 2


def test_reading_pictures_imports_no_pytorch() -> None:
    code = "import sys, model.example_files; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"
