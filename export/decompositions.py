"""Rewrites of PyTorch ops that ONNX has no operator for, applied before a segment is converted.

``aten.adaptive_max_pool2d`` (the ESResNeXt attention gates) pools into bins whose edges are
``floor(i * in / out)`` and ``ceil((i + 1) * in / out)``; when ``in`` is not a multiple of ``out`` the
bins overlap and no ONNX ``MaxPool`` reproduces them. A maximum over a rectangle is a maximum over
rows of a maximum over columns, so the rewrite reduces each row bin, then each column bin, with the
input's (static) spatial size: ``out_h + out_w`` slices instead of one op. The indices output of the
ATen op is never read by the segments (``F.adaptive_max_pool2d`` drops it); the rewrite returns
zeros there, and the exported graph is checked against PyTorch numerically (:func:`export.onnx._verify`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.nn import functional as F

aten = torch.ops.aten


def _bins(size: int, out: int) -> list[tuple[int, int]]:
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def adaptive_max_pool2d(x: torch.Tensor, output_size: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C, H, W) -> (B, C, out_h, out_w)`` with PyTorch's bin edges, from slices and ``amax``."""
    in_h, in_w = int(x.shape[-2]), int(x.shape[-1])
    out_h, out_w = int(output_size[0]), int(output_size[1])
    if in_h % out_h == 0 and in_w % out_w == 0:  # equal, disjoint bins: one MaxPool
        kernel = (in_h // out_h, in_w // out_w)
        values = F.max_pool2d(x, kernel, kernel)
    else:
        rows = torch.cat([x[..., a:b, :].amax(dim=-2, keepdim=True) for a, b in _bins(in_h, out_h)], dim=-2)
        values = torch.cat([rows[..., a:b].amax(dim=-1, keepdim=True) for a, b in _bins(in_w, out_w)], dim=-1)
    return values, torch.zeros(values.shape, dtype=torch.long, device=x.device)


REWRITES: dict[Any, Callable[..., Any]] = {aten.adaptive_max_pool2d.default: adaptive_max_pool2d}


def decompose_unsupported(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``program`` with the ops of :data:`REWRITES` rewritten (unchanged, and not re-traced, if it has none)."""
    used = {node.target for node in program.graph.nodes if node.op == "call_function"}
    table = {op: fn for op, fn in REWRITES.items() if op in used}
    return program.run_decompositions(table) if table else program
