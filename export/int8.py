"""A base's image encoder in int8, calibrated on the pictures this daemon has kept, and ``python -m export.int8``.

    python -m export.int8 --base <state_dir>/bases/<digest> --held-out <state_dir>/held_out --out DIR

writes into ``DIR`` the base's ``image.onnx`` quantized by ONNX Runtime's static quantization (QDQ,
int8 weights per output channel, uint8 activations) and ``int8.json`` (the base it belongs to, how
many pictures calibrated it, how close it came to fp32 on them, its checksum). The daemon runs it
once per base when ``server.base_precision`` is ``int8`` (``service/compiling.py``) and keeps the
result beside the base, in ``<state_dir>/bases/<digest>.int8/``.

Calibration pictures are the held-out pictures of the tasks taught so far (``held_out/``: what the
daemon keeps to measure accuracy and forgetting), taken class by class in turn, at most
``MAX_EXAMPLES``; with fewer than ``MIN_EXAMPLES`` nothing is built (exit 2) and the base serves fp32
until a later task brings more. Static quantization fixes each activation's range from these
pictures, so a picture's features do not depend on the batch it comes in.

Only the image encoder: the audio encoder's networks were measured quantized the same way (validation
data, docs/benchmarks.md): the speech embedding cost AV-MNIST 0.4 to 0.9 points fused accuracy
(outside the 0.3 allowed) and YAMNet's body answered ESC-50 sounds' patches with a median cosine of
0.22 to fp32, so both stay fp32.

What changes: the image features, not the head. A version's head is still the one its learner
fitted on fp32 features (the learner, its statistics and a district's merge never see int8), so
answers served through this graph are close to the learner's, not equal: docs/benchmarks.md
measures how close. Before anything is written, the graph's features are compared with fp32 on the
calibration pictures; below ``MIN_COSINE`` it is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from export.child import add_child_arguments, apply_child_arguments, write_synced
from serving.base import IMAGE_GRAPH, INT8_FORMAT, INT8_META, META_FILE
from serving.inputs import prepare_images
from serving.sessions import cpu_session

MIN_EXAMPLES = 16
MAX_EXAMPLES = 64
MIN_COSINE = 0.8
"""The least cosine similarity between a calibration picture's int8 and fp32 features: a guard
against a graph that quantization breaks (YAMNet's body reached 0.05), not a measure of accuracy
(the `lite` image encoder on 48 to 64 AV-MNIST and ESC-CIFAR training pictures: 0.91 to 0.97 at
worst; docs/benchmarks.md measures accuracy)."""


class CalibrationError(ValueError):
    """The int8 graph cannot be built: too few pictures, or features too far from fp32."""


def count_pictures(held_out: Path) -> int:
    """Pictures in the held-out files of ``held_out`` (reads their headers only)."""
    from model.example_files import count_pictures as in_file

    count = 0
    for path in sorted(held_out.glob("*.safetensors")) if held_out.is_dir() else []:
        try:
            count += in_file(path)
        except (OSError, ValueError):
            continue  # a file being replaced; counted next time
    return count


def held_out_pictures(held_out: Path, limit: int = MAX_EXAMPLES) -> list[np.ndarray]:
    """Pictures from the held-out files (``model/example_files.py``), classes in turn, at most ``limit``."""
    from model.example_files import labelled_pictures

    by_class: dict[str, list[np.ndarray]] = {}
    for path in sorted(held_out.glob("*.safetensors")) if held_out.is_dir() else []:
        for label, picture in labelled_pictures(path):
            by_class.setdefault(label, []).append(picture)
    chosen: list[np.ndarray] = []
    for row in range(max((len(v) for v in by_class.values()), default=0)):
        chosen += [pictures[row] for pictures in by_class.values() if row < len(pictures)]
    return chosen[:limit]


def calibration_pictures(base_meta: dict[str, Any], held_out: Path) -> np.ndarray:
    """``(N, 3, S, S)`` model-ready pictures from the held-out files, prepared as ``base.json`` says.
    Raises :class:`CalibrationError` when there are too few."""
    pictures = held_out_pictures(held_out)
    if len(pictures) < MIN_EXAMPLES:
        raise CalibrationError(f"{len(pictures)} held-out pictures in {held_out}; int8 is calibrated on at least "
                               f"{MIN_EXAMPLES}")
    return prepare_images(pictures, int(base_meta["image_size"]), [float(v) for v in base_meta["image_mean"]],
                          [float(v) for v in base_meta["image_std"]])


def quantize(fp32: Path, out: Path, pictures: np.ndarray, batch: int = 8) -> None:
    """Writes the int8 (QDQ) form of the image graph ``fp32`` to ``out``, calibrated on ``pictures``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Pictures(CalibrationDataReader):  # type: ignore[misc]  # ONNX Runtime ships no types
        def __init__(self) -> None:
            self.start = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.start >= len(pictures):
                return None
            self.start += batch
            return {"images": pictures[self.start - batch:self.start]}

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"  # shapes inferred, the graph simplified, as ONNX Runtime advises
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(str(prepared), str(out), Pictures(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def cosines(fp32: Path, int8: Path, pictures: np.ndarray, threads: int) -> np.ndarray:
    """Each picture's cosine similarity between its features from the two graphs."""
    a = cpu_session(fp32, threads).run(None, {"images": pictures})[0].astype(np.float64)
    b = cpu_session(int8, threads).run(None, {"images": pictures})[0].astype(np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return np.asarray((a * b).sum(axis=1) / norms)


def build_int8(base_folder: Path, held_out: Path, out: Path, threads: int = 1) -> dict[str, Any]:
    """Writes the int8 image graph and ``int8.json`` of the base in ``base_folder`` into ``out``
    (module docstring); raises :class:`CalibrationError`. Returns what ``int8.json`` holds."""
    started = time.perf_counter()
    meta = json.loads((base_folder / META_FILE).read_text())
    pictures = calibration_pictures(meta, held_out)
    with tempfile.TemporaryDirectory() as scratch:
        graph = Path(scratch) / IMAGE_GRAPH
        quantize(base_folder / IMAGE_GRAPH, graph, pictures)
        similar = cosines(base_folder / IMAGE_GRAPH, graph, pictures, threads)
        if not np.isfinite(similar).all() or similar.min() < MIN_COSINE:
            raise CalibrationError(f"the int8 graph's features are too far from fp32 on its calibration pictures "
                                   f"(least cosine {float(np.nan_to_num(similar.min())):.3f}, needs {MIN_COSINE})")
        data = graph.read_bytes()
    out.mkdir(parents=True, exist_ok=True)
    write_synced(out / IMAGE_GRAPH, data)
    info: dict[str, Any] = {
        "format": INT8_FORMAT, "base": meta["digest"], "pictures": len(pictures),
        "cosine": {IMAGE_GRAPH: {"least": round(float(similar.min()), 6), "mean": round(float(similar.mean()), 6)}},
        "sha256": {IMAGE_GRAPH: hashlib.sha256(data).hexdigest()},
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_synced(out / INT8_META, json.dumps(info, indent=2, sort_keys=True).encode())  # last: the folder is whole
    return info


def main(argv: Sequence[str] | None = None) -> int:
    """Builds the int8 image graph of the base in ``--base`` into ``--out``; exit 2 when there are too
    few pictures, 1 when it cannot be built (reason on stderr)."""
    parser = argparse.ArgumentParser(prog="python -m export.int8", description=main.__doc__)
    parser.add_argument("--base", required=True, type=Path, help=f"the base's folder ({META_FILE}, {IMAGE_GRAPH}, ...)")
    parser.add_argument("--held-out", required=True, type=Path, help="the daemon's held_out/ folder")
    parser.add_argument("--out", required=True, type=Path, help=f"folder for {INT8_META} and the int8 graph")
    add_child_arguments(parser)
    args = parser.parse_args(argv)
    apply_child_arguments(args, parser, pytorch=False)
    try:
        info = build_int8(args.base, args.held_out, args.out, threads=args.threads or 1)
    except CalibrationError as exc:
        print(f"no int8 image graph: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError) as exc:
        print(f"cannot build the int8 image graph of {args.base}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    least = ", ".join(f"{name} {c['least']}" for name, c in info["cosine"].items())
    print(f"int8 graph of base {str(info['base'])[:12]} calibrated on {info['pictures']} pictures in {info['seconds']} s "
          f"(least cosine to fp32: {least})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
