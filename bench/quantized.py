"""Does a base in int8 serve as well? Accuracy and speed of the ``lite`` base, fp32 vs int8 image encoder.

    python -m bench.quantized --data ../shared/data/esc-cifar ../shared/data/avmnist --out q.json
    python -m bench.quantized --data ... --split test      # the figures docs/benchmarks.md reports

The ``lite`` base (``export/base.py``) is quantized as ``server.base_precision: int8`` quantizes it
(``export/int8.py``: its image encoder, by ONNX Runtime's static quantization), for each data set on
its own ``--calibration-per-class`` pictures per class of the rows the head is fitted on (a daemon
calibrates on the held-out pictures of the classes it was taught: the same classes, the same place). For each data set, the default learner's head (``mcil``:
ridge on the frozen features) is fitted on fp32 features of the training rows, as a daemon learns,
and scores the evaluation rows twice: with the fp32 base's features and with the int8 base's (what a
daemon with ``base_precision: int8`` serves). ``--split val`` (default) holds out ``train.csv``'s last
speaker (ESC-50's fold 3 on ESC-CIFAR) and never reads ``test.csv``; ``--split test`` fits on
``train.csv`` and scores ``test.csv``. Speed: the median of ``--runs`` calls of the features of 1 and
32 pairs (pictures and sounds prepared, every graph) with each base.
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
from export.int8 import build_int8
from model.data import read_split, read_split_domains
from model.heads import unit_features
from model.learner import create_learner
from model.samples import LabeledSample
from service.store import save_examples
from serving.base import BaseGraphs
from serving.features import BaseFeatures

CHUNK = 32


def features(base: BaseFeatures, samples: list[LabeledSample]) -> dict[str, np.ndarray]:
    """``{"visual", "audio"}`` features of ``samples``, ``CHUNK`` at a time."""
    parts = [base.of(samples[i:i + CHUNK]) for i in range(0, len(samples), CHUNK)]
    return {key: np.concatenate([p[key] for p in parts]) for key in ("visual", "audio")}


def calibrated(folder: Path, name: str, fit: list[LabeledSample], per_class: int, threads: int) -> tuple[BaseGraphs, dict[str, Any]]:
    """The base in ``folder`` in int8, calibrated as a daemon calibrates it (``export/int8.py``: its
    kept held-out examples, classes in turn): on ``per_class`` examples per class of ``fit``."""
    held = folder / f"held_out-{name}"
    held.mkdir()
    taken: dict[str, int] = {}
    picked = []
    for sample in fit:
        if taken.get(sample.label, 0) < per_class:
            taken[sample.label] = taken.get(sample.label, 0) + 1
            picked.append(sample)
    save_examples(held / "task.safetensors", picked)
    info = build_int8(folder, held, folder / f"int8-{name}", threads)
    return BaseGraphs.load(folder, threads).with_int8(folder / f"int8-{name}", threads), info


def accuracy(root: Path, split: str, folder: Path, per_class: int, threads: int) -> dict[str, Any]:
    """Fused, image-only and sound-only accuracy (percent) of the default head with each base's features."""
    train = read_split(root, "train")
    if split == "val":
        fit, held, what = held_out_domain(train.samples, read_split_domains(root, "train"), seed=0)
    else:
        fit, held, what = train.samples, read_split(root, "test").samples, "test.csv"
    int8, info = calibrated(folder, root.name, fit, per_class, threads)
    bases = {"fp32": BaseFeatures(BaseGraphs.load(folder, threads)), "int8": BaseFeatures(int8)}
    names = train.class_names
    head = create_learner("lite", "mcil").head
    assert head is not None
    seen = features(bases["fp32"], fit)
    y = torch.tensor([names.index(s.label) for s in fit])
    by_path = _paths(seen["visual"], seen["audio"])
    head.learn(by_path, {p: y for p in by_path}, len(names))
    labels = np.array([names.index(s.label) for s in held])
    out: dict[str, Any] = {"evaluated_on": what, "pairs": len(held), "trained_on": len(fit), "int8_graphs": info}
    fused: dict[str, np.ndarray] = {}
    for name, base in bases.items():
        x = _paths(**features(base, held))
        fused[name] = head.pair_scores(x).argmax(dim=1).numpy()
        out[name] = {"fused": 100 * float((fused[name] == labels).mean())}
        for path in ("visual", "audio"):
            out[name][path] = 100 * float((head.scores(x[path], path).argmax(dim=1).numpy() == labels).mean())
    out["fused_answers_same"] = int((fused["fp32"] == fused["int8"]).sum())
    return out


def _paths(visual: np.ndarray, audio: np.ndarray) -> dict[str, torch.Tensor]:
    v, a = torch.from_numpy(visual), torch.from_numpy(audio)
    return {"visual": unit_features([v]), "audio": unit_features([a]), "av": unit_features([v, a])}


def speed(bases: dict[str, BaseFeatures], samples: list[LabeledSample], runs: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for n in (1, CHUNK):
        batch = [samples[i % len(samples)] for i in range(n)]
        out[str(n)] = {}
        for name, base in bases.items():
            base.of(batch)
            times = []
            for _ in range(runs if n == 1 else max(3, runs // 4)):
                started = time.perf_counter()
                base.of(batch)
                times.append(time.perf_counter() - started)
            out[str(n)][name] = 1000 * statistics.median(times)
    return out


def render(report: dict[str, Any]) -> str:
    lines = [f"`lite` base, fp32 and int8, {report['machine']}; evaluated on {report['split']}.", "",
             "| data | evaluated on | int8 calibrated on | fused fp32 | fused int8 | fused answers the same | "
             "image fp32 / int8 | sound fp32 / int8 |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in report["accuracy"].items():
        q = r["int8_graphs"]
        least = min(c["least"] for c in q["cosine"].values())
        f, i = r["fp32"], r["int8"]
        lines.append(f"| {name} | {r['evaluated_on']} ({r['pairs']} pairs) | {q['pictures']} pictures (least cosine to "
                     f"fp32 {least:.3f}) | {f['fused']:.2f} | {i['fused']:.2f} | {r['fused_answers_same']} of "
                     f"{r['pairs']} | {f['visual']:.2f} / {i['visual']:.2f} | {f['audio']:.2f} / {i['audio']:.2f} |")
    s = report["speed_ms"]
    lines += ["", f"A pair's features (pictures and sounds prepared, every graph), median ms ({report['speed_data']}): "
              f"1 pair fp32 {s['1']['fp32']:.1f}, int8 {s['1']['int8']:.1f}; {CHUNK} pairs fp32 "
              f"{s[str(CHUNK)]['fp32']:.1f}, int8 {s[str(CHUNK)]['int8']:.1f}."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from export.base import export_base

    parser = argparse.ArgumentParser(prog="python -m bench.quantized", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="data folders (AV-MNIST layout)")
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--calibration-per-class", type=int, default=6,
                        help="pictures per class the int8 image graph is calibrated on (export.int8 takes at most 64)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    learner = create_learner("lite", "mcil")
    with tempfile.TemporaryDirectory(prefix="mcil-quantized-") as tmp:
        folder = Path(tmp)
        export_base(learner.backbone, folder)
        del learner
        accuracies = {root.name: accuracy(root, args.split, folder, args.calibration_per_class, args.threads)
                      for root in args.data}
        first = args.data[0]
        bases = {"fp32": BaseFeatures(BaseGraphs.load(folder, args.threads)),
                 "int8": BaseFeatures(BaseGraphs.load(folder, args.threads).with_int8(folder / f"int8-{first.name}",
                                                                                      args.threads))}
        report: dict[str, Any] = {
            "machine": f"{cpu_name()}, {args.threads} threads", "split": args.split,
            "speed_data": f"{first.name} train.csv pairs",
            "speed_ms": speed(bases, read_split(first, "train", 4).samples, args.runs), "accuracy": accuracies}
    text = render(report)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
