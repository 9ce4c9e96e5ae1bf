"""``python -m export.trt``: ONNX export, then TensorRT engines for every frozen segment.

::

    python -m export.trt --base <state_dir>/bases/<digest>      # a base's graphs instead (export/trt_base.py)
    python -m export.trt --preset lite --out artifacts/lite
    python -m export.trt --preset audioclip --weights clip=ViT-B-16.pt --weights audioclip=AudioCLIP.pt \\
        --out artifacts/audioclip --precision fp16 --profile 1:8:32

Engines are keyed by TensorRT version, GPU compute capability, ONNX hash, precision and profiles
(:mod:`export.engines`) and rebuilt only when stale. The daemon then serves them with
``runner: tensorrt``. On a machine without TensorRT or without a CUDA GPU the command stops before
any work with one line naming what is missing, and exit status 3. Written for TensorRT 10; not run
on the development machines (see docs/export.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from export.engines import DEFAULT_PROFILES, Profile
from export.errors import ExportError, RunnerUnavailableError
from export.manifest import PRECISIONS
from export.onnx import add_common_arguments, check_preset, configure_logging, ensure_exported, parse_weights

EXIT_MISSING = 3

log = logging.getLogger("export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export.trt", description=__doc__.split("\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16",
                        help="engine precision, taken from the ONNX types (strongly typed networks)")
    parser.add_argument("--profile", action="append", type=_profile, metavar="MIN:OPT:MAX",
                        help=f"batch-size optimisation profile (repeatable; default {DEFAULT_PROFILES[0].min}:"
                             f"{DEFAULT_PROFILES[0].opt}:{DEFAULT_PROFILES[0].max})")
    parser.add_argument("--force", action="store_true", help="rebuild every engine even if it is current")
    return parser


def _profile(text: str) -> Profile:
    try:
        return Profile.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--base" or a.startswith("--base=") for a in argv):
        from export import trt_base

        return trt_base.main(argv)  # engines of a base's graphs, for server.base_device: tensorrt
    parser = build_parser()
    args = parser.parse_args(argv)
    check_preset(parser, args.preset)
    try:
        weights = parse_weights(args.weights)
    except ValueError as exc:
        parser.error(str(exc))
    from export import tensorrt_runner

    try:
        tensorrt_runner.check_available()
    except RunnerUnavailableError as exc:
        print(f"export.trt: cannot build engines: {exc.missing}", file=sys.stderr)
        return EXIT_MISSING
    configure_logging()
    from model.backbone import build_backbone

    backbone = build_backbone(args.preset, weights)
    try:
        manifest, _ = ensure_exported(backbone, args.out, precisions=(args.precision,))
        plans = tensorrt_runner.ensure_engines(manifest, args.out, precision=args.precision,
                                               profiles=tuple(args.profile or DEFAULT_PROFILES), force=args.force)
    except ExportError as exc:
        print(f"export.trt: {exc}", file=sys.stderr)
        return 1
    for name, plan in plans.items():
        print(f"{name}: {plan.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
