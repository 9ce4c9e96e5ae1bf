"""python -m bench.audio_encoders on a small folder built here: the held-out speaker, every encoder."""

from __future__ import annotations

import csv
import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.audio_encoders import ENCODERS, main
from model.synthetic import class_image, class_tone

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _folder(root: Path, classes: tuple[str, ...] = ("low", "high"), speakers: int = 3, takes: int = 3) -> Path:
    """``train.csv`` with ``speakers`` speakers; each clip appears twice (with two photos), as in ESC-CIFAR."""
    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True)
    images, rows = [], []
    for label, name in enumerate(classes):
        for speaker in range(speakers):
            for take in range(takes):
                clip = f"audio/{name}-{speaker}-{take}.wav"
                sf.write(root / clip, class_tone(label, rng), 16000)
                for _ in range(2):
                    rows.append({"label": label, "class_name": name, "audio": clip, "image_index": len(images),
                                 "speaker": f"s{speaker}"})
                    images.append(class_image(label, rng))
    with (root / "train.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    array = np.stack(images).astype(np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(root / "images-idx3-ubyte.gz", "wb") as f:
        f.write(header + array.tobytes())
    return root


def test_it_compares_every_encoder_on_the_held_out_speaker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _folder(tmp_path / "data")
    assert main(["--data", str(data), "--threads", "1", "--out", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["validation"] == "validation (train.csv, speaker s2)"
    assert report["train_clips"] == 2 * 2 * 3 and report["validation_clips"] == 2 * 3  # each recording once
    assert list(report["encoders"]) == list(ENCODERS)
    assert [report["encoders"][e]["dim"] for e in ENCODERS] == [192, 1024, 1216]
    for figures in report["encoders"].values():
        assert 0.0 <= figures["ridge_accuracy"] <= 100.0 and figures["ms_per_clip"] > 0
    assert report["encoders"]["both"]["class_mean_accuracy"] == 100.0  # two tones an octave apart
    assert "| both | 1216 |" in capsys.readouterr().out


def test_a_folder_without_train_csv_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path)]) == 2
    assert "--data" in capsys.readouterr().err
