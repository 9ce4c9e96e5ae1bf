"""Would an int8 image encoder serve as well? Accuracy and speed of the base's image graph, fp32 vs int8.

    python -m bench.quantized --data ../shared/data/esc-cifar ../shared/data/avmnist --out q.json
    python -m bench.quantized --data ... --split test      # the figures docs/benchmarks.md reports

The ``lite`` base's image graph (``export/base.py``) is quantized with ONNX Runtime's static
quantization (QDQ, int8 weights per channel, uint8 activations), calibrated on
``--calibration-per-class`` pictures per class of every data set's ``train.csv`` (examples a daemon
would have seen). For each data set, the default learner's head (``mcil``: ridge on the frozen
features) is fitted on fp32 features of the training rows, as a daemon learns, and scores the
evaluation rows twice: with the fp32 image features and with the int8 ones (the sound's features are
the same both times). ``--split val`` (default) holds out ``train.csv``'s last speaker (ESC-50's fold
3 on ESC-CIFAR) and never reads ``test.csv``; ``--split test`` fits on ``train.csv`` and scores
``test.csv``. Speed: the median of ``--runs`` calls of each graph alone at batch 1 and 16.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from bench.run import held_out_domain
from export.bench import cpu_name
from export.int8 import quantize
from model.data import read_split, read_split_domains
from model.heads import unit_features
from model.learner import create_learner
from model.samples import LabeledSample
from serving.sessions import cpu_session

CHUNK = 16


def features(learner: Any, sessions: dict[str, Any], samples: list[LabeledSample]) -> dict[str, np.ndarray]:
    """Image features from every graph in ``sessions`` and the audio encoder's, ``CHUNK`` rows at a time."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in [*sessions, "audio"]}
    for start in range(0, len(samples), CHUNK):
        batch = learner.encode_inputs(samples[start:start + CHUNK])
        for name, session in sessions.items():
            out[name].append(session.run(None, {"images": batch.images.numpy()})[0])
        out["audio"].append(batch.audio.numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}


def accuracy(root: Path, split: str, sessions: dict[str, Any]) -> dict[str, Any]:
    """Fused and image-only accuracy (percent) of the default head with each graph's image features."""
    train = read_split(root, "train")
    if split == "val":
        fit, held, what = held_out_domain(train.samples, read_split_domains(root, "train"), seed=0)
    else:
        fit, held, what = train.samples, read_split(root, "test").samples, "test.csv"
    names = train.class_names
    learner = create_learner("lite", "mcil")
    head = learner.head
    assert head is not None
    seen = features(learner, {"fp32": sessions["fp32"]}, fit)
    y = torch.tensor([names.index(s.label) for s in fit])
    by_path = _paths(seen["fp32"], seen["audio"])
    head.learn(by_path, {p: y for p in by_path}, len(names))
    scored = features(learner, sessions, held)
    labels = np.array([names.index(s.label) for s in held])
    out: dict[str, Any] = {"evaluated_on": what, "pairs": len(held), "trained_on": len(fit)}
    for name in sessions:
        x = _paths(scored[name], scored["audio"])
        fused = head.pair_scores(x).argmax(dim=1).numpy()
        image = head.scores(x["visual"], "visual").argmax(dim=1).numpy()
        out[name] = {"fused": 100 * float((fused == labels).mean()), "image": 100 * float((image == labels).mean())}
    return out


def _paths(image: np.ndarray, audio: np.ndarray) -> dict[str, torch.Tensor]:
    v, a = torch.from_numpy(image), torch.from_numpy(audio)
    return {"visual": unit_features([v]), "audio": unit_features([a]), "av": unit_features([v, a])}


def speed(sessions: dict[str, Any], pictures: np.ndarray, runs: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for n in (1, CHUNK):
        x = pictures[:n]
        out[str(n)] = {}
        for name, session in sessions.items():
            session.run(None, {"images": x})
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                session.run(None, {"images": x})
                times.append(time.perf_counter() - started)
            out[str(n)][name] = 1000 * statistics.median(times)
    return out


def render(report: dict[str, Any]) -> str:
    lines = [f"`lite` image encoder, fp32 and int8, {report['machine']}; calibrated on "
             f"{report['calibration_pictures']} pictures; evaluated on {report['split']}.", "",
             "| data | evaluated on | fused fp32 | fused int8 | image fp32 | image int8 |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in report["accuracy"].items():
        lines.append(f"| {name} | {r['evaluated_on']} ({r['pairs']} pairs) | {r['fp32']['fused']:.2f} | "
                     f"{r['int8']['fused']:.2f} | {r['fp32']['image']:.2f} | {r['int8']['image']:.2f} |")
    s = report["speed_ms"]
    lines += ["", f"The image graph alone, median ms: batch 1 fp32 {s['1']['fp32']:.1f}, int8 {s['1']['int8']:.1f}; "
              f"batch {CHUNK} fp32 {s[str(CHUNK)]['fp32']:.1f}, int8 {s[str(CHUNK)]['int8']:.1f}."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from export.base import export_base

    parser = argparse.ArgumentParser(prog="python -m bench.quantized", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="data folders (AV-MNIST layout)")
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--calibration-per-class", type=int, default=4)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    learner = create_learner("lite", "mcil")
    pictures = []
    for root in args.data:
        shown = [s.image for s in read_split(root, "train", args.calibration_per_class).samples if s.image is not None]
        pictures.append(learner.backbone.prepare_images(shown).numpy())
    calibration = np.concatenate(pictures)
    with tempfile.TemporaryDirectory(prefix="mcil-quantized-") as tmp:
        folder = Path(tmp)
        export_base(learner.backbone, folder)
        quantize(folder / "image.onnx", folder / "int8.onnx", calibration)
        sessions = {"fp32": cpu_session(folder / "image.onnx", args.threads),
                    "int8": cpu_session(folder / "int8.onnx", args.threads)}
        report: dict[str, Any] = {
            "machine": f"{cpu_name()}, {args.threads} threads", "split": args.split,
            "calibration_pictures": len(calibration),
            "speed_ms": speed(sessions, calibration, args.runs),
            "accuracy": {root.name: accuracy(root, args.split, sessions) for root in args.data}}
    text = render(report)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
