"""Which audio encoder serves a data set: audio-only accuracy on validation, and the cost per clip.

    python -m bench.audio_encoders --data ../shared/data/esc-cifar --threads 1 --out audio.json

Compares the ``lite`` preset's audio encoders on one data folder: the speech embedding alone
(``speech``, 192-d), YAMNet alone (``sounds``, 1024-d) and the two side by side (``both``, what
``lite`` reads: model/encoders/lite_audio.py). ``test.csv`` is never read: ``train.csv``'s last
speaker is held out whole (``bench.run.held_out_domain``; on ESC-CIFAR, ESC-50's fold 3), and each
distinct recording counts once (ESC-CIFAR pairs each clip with several photos). Clips are fitted to
the preset's clip length as the learner fits them (``--clip-seconds`` tries another).

Two classifiers on each encoder's clip features, both fitted on the rest of ``train.csv``: the
nearest class mean by cosine, and the product's ridge head (``model.heads.StatisticsHead``, no
expansion, lambda by GCV). The cost is the median wall time of one clip through the encoder, over
the validation clips, at ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn import functional as F

from bench.run import held_out_domain
from model.data import read_split
from model.encoders.lite_audio import SpeechAndSounds
from model.heads import HeadConfig, StatisticsHead
from model.presets.lite import LiteConfig

ENCODERS = ("speech", "sounds", "both")


def _distinct(samples: list[Any]) -> list[Any]:
    """The first sample of each distinct recording (bit-identical waveform and label)."""
    seen: set[tuple[bytes, str]] = set()
    out = []
    for s in samples:
        key = (s.audio.tobytes(), s.label)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def compare(data: Path, threads: int | None = None, clip_seconds: float | None = None) -> dict[str, Any]:
    if threads:
        torch.set_num_threads(threads)
    split = read_split(data, "train")
    train, held, what = held_out_domain(split.samples, split.domains, seed=0)
    train, held = _distinct(train), _distinct(held)
    clip = LiteConfig(clip_seconds=clip_seconds).clip_samples if clip_seconds else LiteConfig().clip_samples
    encoder = SpeechAndSounds(threads=threads)
    parts: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "speech": lambda w: F.normalize(encoder.speech(w), dim=1),
        "sounds": encoder.sound_events,
        "both": encoder,
    }
    names = split.class_names

    def waves(samples: list[Any]) -> torch.Tensor:
        from model.audio import prepare_waveforms

        return prepare_waveforms([s.audio for s in samples], [s.sample_rate for s in samples], 16000, clip)

    y_train = torch.tensor([names.index(s.label) for s in train])
    y_held = torch.tensor([names.index(s.label) for s in held])
    report: dict[str, Any] = {"data": str(data), "validation": what, "train_clips": len(train),
                              "validation_clips": len(held), "clip_seconds": clip / 16000,
                              "threads": torch.get_num_threads(), "encoders": {}}
    for name in ENCODERS:
        encode = parts[name]
        fit = torch.cat([encode(waves(train[i:i + 32])) for i in range(0, len(train), 32)])
        seconds, rows = [], []
        for s in held:
            started = time.perf_counter()
            rows.append(encode(waves([s])))
            seconds.append(time.perf_counter() - started)
        check = torch.cat(rows)
        means = F.normalize(torch.stack([fit[y_train == k].mean(0) for k in range(len(names))]), dim=1)
        ncm = float((F.normalize(check, dim=1) @ means.T).argmax(1).eq(y_held).double().mean())
        head = StatisticsHead("analytic", HeadConfig(expansion=0), {"audio": fit.shape[1]})
        head.learn({"audio": F.normalize(fit, dim=1)}, {"audio": y_train}, len(names))
        ridge = float(head.scores(F.normalize(check, dim=1), "audio").argmax(1).eq(y_held).double().mean())
        report["encoders"][name] = {"dim": int(fit.shape[1]), "class_mean_accuracy": round(100 * ncm, 1),
                                    "ridge_accuracy": round(100 * ridge, 1),
                                    "ms_per_clip": round(1000 * statistics.median(seconds), 1)}
    return report


def table(report: dict[str, Any]) -> str:
    lines = [f"{report['data']}: {report['validation']}, {report['validation_clips']} clips "
             f"({report['train_clips']} to fit), {report['clip_seconds']:g} s, {report['threads']} thread(s)", "",
             "| encoder | dim | class mean | ridge head | ms per clip |", "|---|---|---|---|---|"]
    for name, r in report["encoders"].items():
        lines.append(f"| {name} | {r['dim']} | {r['class_mean_accuracy']} | {r['ridge_accuracy']} | {r['ms_per_clip']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.audio_encoders", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder laid out like AV-MNIST (train.csv is read)")
    p.add_argument("--threads", type=int, help="PyTorch and ONNX Runtime threads (default: PyTorch's)")
    p.add_argument("--clip-seconds", type=float, help="clip length (default: the lite preset's)")
    p.add_argument("--out", type=Path, help="where to write the JSON report")
    args = p.parse_args(argv)
    if not (args.data / "train.csv").is_file():
        print(f"error: --data {args.data}: no train.csv there", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads < 1:
        print("error: --threads: a number >= 1", file=sys.stderr)
        return 2
    try:
        report = compare(args.data, args.threads, args.clip_seconds)
    except ValueError as exc:  # LiteConfig names the field (a clip shorter than one window)
        print(f"error: --clip-seconds: {exc}", file=sys.stderr)
        return 2
    print(table(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
