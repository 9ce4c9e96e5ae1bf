"""``python -m export.trt --base DIR``: TensorRT engines of a base's graphs, built ahead of serving.

    python -m export.trt --base ~/.local/state/mcil/bases/<digest> --precision fp16
        # -> bases/<digest>.trt-fp16/: TensorRT's engine and timing caches, trt.json

A daemon with ``server.base_device: tensorrt`` serves a base's image graph through ONNX Runtime's
TensorRT provider (``serving/sessions.py``): TensorRT takes the graph (or the parts of it it
supports; the rest run on CUDA) and compiles an engine, which ONNX Runtime keeps in an engine cache
beside the base; the audio graphs, whose shapes vary with each clip, run on the same GPU through
CUDA. Compiling can take minutes (not measured here: no GPU), so it is done here, once per base,
GPU and ONNX Runtime, rather than on the first Classify: the engine gets one optimisation profile
from 1 to ``serving.base.CHUNK`` pictures (``serving/base.py``), and every graph runs once at both
ends. ``trt.json``, written last, records the base, the GPU number and the ONNX Runtime version.
The daemon runs this command itself
(``python -m export.trt_base``, the same without importing the exporter's PyTorch), in a child
process, the first time it serves over a base (``service/compiling.py``).

Without a CUDA GPU, ``onnxruntime-gpu`` or TensorRT it stops before any work with one line naming
what is missing, and exit status 3. Not run on the development machines (docs/export.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from export.child import add_child_arguments, apply_child_arguments, write_synced

EXIT_MISSING = 3
TRT_FORMAT = 1


def warm(base: Any) -> list[int]:
    """Runs every graph of ``base`` (``serving.base.BaseGraphs``) at the batch sizes serving sends;
    returns them."""
    from serving.base import CHUNK

    rng = np.random.Generator(np.random.PCG64(0))
    batches = [1, CHUNK]
    for n in batches:
        base.image_features(rng.standard_normal((n, 3, base.image_size, base.image_size), dtype=np.float32))
        if base.has_audio:
            clip = int(base.meta["clip_samples"])
            base.audio_features(0.1 * rng.standard_normal((n, clip), dtype=np.float32))
    return batches


def build_engines(folder: Path, out: Path, precision: str, device_id: int, threads: int) -> dict[str, Any]:
    """Engines of the base in ``folder``, cached in ``out``; returns what ``trt.json`` holds."""
    import onnxruntime as ort

    from serving.base import TRT_META, BaseGraphs
    from serving.errors import BaseGraphsError
    from serving.sessions import Placement

    started = time.perf_counter()
    placement = Placement("tensorrt", device_id, precision, cache=out)
    base = BaseGraphs.load(folder, threads, placement=placement)
    batches = warm(base)
    if not any(path.suffix == ".engine" for path in out.iterdir()):
        raise BaseGraphsError("engines", f"TensorRT wrote no engine into {out} (ONNX Runtime's log says why)")
    info = {"format": TRT_FORMAT, "base": base.digest, "precision": precision, "device_id": device_id,
            "onnxruntime": ort.__version__, "batches": batches,
            "files": sorted(p.name for p in out.iterdir() if p.is_file()),
            "seconds": round(time.perf_counter() - started, 1)}
    write_synced(out / TRT_META, json.dumps(info, indent=2, sort_keys=True).encode())
    return info


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export.trt", description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, type=Path, help="the base's folder (base.json, image.onnx, ...)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp16", help="the engines' precision")
    parser.add_argument("--device", type=int, default=0, help="the CUDA GPU's number")
    parser.add_argument("--out", type=Path, help="folder for the engines (default: bases/<digest>.trt-<precision>)")
    add_child_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when built, 3 when this machine cannot build engines, 1 when the base cannot be read."""
    from serving.base import BaseGraphs, trt_folder
    from serving.errors import BaseGraphsError, PlacementError
    from serving.sessions import Placement

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.device < 0:
        parser.error(f"--device: a GPU number is >= 0, got {args.device}")
    if not BaseGraphs.present(args.base):
        parser.error(f"--base: no base in {args.base} (its base.json is written by python -m export.base)")
    try:
        Placement("tensorrt", args.device, args.precision).check_available("--device")
    except PlacementError as exc:
        print(f"export.trt: cannot build engines: {exc.problem}", file=sys.stderr)
        return EXIT_MISSING
    apply_child_arguments(args, parser, pytorch=False)
    out = args.out or trt_folder(args.base, args.precision)
    out.mkdir(parents=True, exist_ok=True)
    try:
        info = build_engines(args.base, out, args.precision, args.device, threads=args.threads or os.cpu_count() or 1)
    except BaseGraphsError as exc:
        print(f"export.trt: the base in {args.base}: {exc}", file=sys.stderr)
        return 1
    print(f"TensorRT engines of base {str(info['base'])[:12]} ({args.precision}, GPU {args.device}) in {out}: "
          f"{len(info['files'])} files, {info['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
