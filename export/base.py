"""Building a base's image graph (``serving/base.py`` serves it), and ``python -m export.base``.

    python -m export.base --preset lite --out DIR [--weights clip=...] [--threads N]

writes ``image.onnx`` (the frozen image encoder, dynamic batch) and ``base.json`` (the base's digest,
the input size, the graph's checksum). The graph is checked against the eager encoder on random
images before anything is written. The daemon runs this once per base, in a niced child process, and
keeps the result under ``<state_dir>/bases/<digest>/`` (``service/compiling.py``).

:func:`base_digest` names a base: the frozen image encoder's tensors, its input size and
``serving.base.FORMAT``. Two daemons with the same digest compute the same image features.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from export.errors import CompileError
from export.served_graphs import to_onnx
from model.backbone import TriModalBackbone
from serving.base import FORMAT, IMAGE_GRAPH, META_FILE

TOLERANCE = 1e-4
"""Largest difference allowed between the graph's features and the eager encoder's (unit-scale features)."""


def base_digest(backbone: TriModalBackbone) -> str:
    """sha256 of what the base's image graph computes from (module docstring)."""
    digest = hashlib.sha256(f"base format {FORMAT}|image_size {backbone.image_size}|".encode())
    for index, module in enumerate(backbone.image.frozen_modules()):
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{index}.{name}|{tuple(t.shape)}|{t.dtype}|".encode())
            digest.update(t.numpy().tobytes())
    return digest.hexdigest()


class _FrozenImage(nn.Module):
    """The frozen image encoder alone (no experts), for export."""

    def __init__(self, backbone: TriModalBackbone) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(backbone).cpu()
        self.backbone.image.set_runner(None)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:  # (images,): the signature to_onnx exports
        out: torch.Tensor = self.backbone.image.frozen_features(inputs[0])
        return out


def export_base(backbone: TriModalBackbone, out: Path) -> dict[str, object]:
    """Exports, checks and writes the base's image graph into ``out``; returns ``base.json``'s content.
    Raises :class:`CompileError`."""
    import onnxruntime as ort

    started = time.perf_counter()
    module = _FrozenImage(backbone).eval()
    size = backbone.image_size
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    try:
        data = to_onnx(module, (images[:2],), ["images"], "features")
    except Exception as exc:  # the exporter raises many unrelated types
        raise CompileError("base.image", f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    got = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"images": images.numpy()})[0]
    with torch.no_grad():
        want = module(images).numpy()
    worst = float(np.abs(got - want).max(initial=0.0))
    if got.shape != want.shape or not worst <= TOLERANCE:
        raise CompileError("base.image", f"the graph differs from the eager encoder by {worst:g} "
                           f"(tolerance {TOLERANCE:g})")
    out.mkdir(parents=True, exist_ok=True)
    _write_synced(out / IMAGE_GRAPH, data)
    meta: dict[str, object] = {"format": FORMAT, "digest": base_digest(backbone), "image_size": size,
                               "feature_dim": int(want.shape[1]), "image_sha256": hashlib.sha256(data).hexdigest(),
                               "largest_difference": worst, "seconds": round(time.perf_counter() - started, 2)}
    _write_synced(out / META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode())  # last: marks it whole
    return meta


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    """Builds the image graph of PRESET's base into ``--out``; exit 1 (reason on stderr) if it cannot."""
    from export.compiled import _exit_with_parent
    from export.onnx import add_weights_argument, configure_logging, parse_weights
    from model.backbone import build_backbone

    parser = argparse.ArgumentParser(prog="python -m export.base", description=main.__doc__)
    parser.add_argument("--preset", required=True, help="the backbone preset (tiny, lite, ...)")
    parser.add_argument("--out", required=True, type=Path, help="folder for base.json and image.onnx")
    add_weights_argument(parser)
    parser.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: PyTorch's)")
    parser.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority by this much")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit as soon as this process is gone")
    args = parser.parse_args(argv)
    configure_logging()
    if args.nice:
        os.nice(args.nice)
    if args.parent_pid is not None:
        _exit_with_parent(args.parent_pid)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads: must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    try:
        meta = export_base(build_backbone(args.preset, parse_weights(args.weights)), args.out)
    except (CompileError, ValueError, OSError) as exc:
        print(f"cannot build the base of {args.preset}: {exc}", file=sys.stderr)
        return 1
    print(f"built base {str(meta['digest'])[:12]} of {args.preset} into {args.out} in {meta['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
