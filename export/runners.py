"""Where the frozen segments run, behind one interface, and the one call the daemon makes.

    attach_runner(backbone, "onnxruntime", Path("artifacts/tiny"))   # -> "onnxruntime"

Runner kinds, in fallback order (a kind that cannot run here falls back to the next one)::

    tensorrt              native TensorRT engines (export.tensorrt_runner), GPU only
    onnxruntime-tensorrt  ONNX Runtime with its TensorRT execution provider, GPU only
    onnxruntime-cuda      ONNX Runtime with its CUDA execution provider, GPU only
    onnxruntime           ONNX Runtime on the CPU
    pytorch               the backbone's own modules (eager); always available

A runner replaces only the frozen pieces (:meth:`model.towers.Tower.set_runner`,
:meth:`model.backbone.TriModalBackbone.set_audio_runner`), and only while gradients are disabled; the
mixtures of experts, projections and fusion always run in PyTorch. Because the frozen pieces never
change, adding experts for a new task leaves an attached runner valid.

A segment's outputs come back on the device its inputs came from, so the learner may live on the GPU
while a runner works on the CPU (``onnxruntime``) or the other way round; the copies cost time, and
the fast pairing is a GPU runner with the learner on the same GPU (the daemon's ``server.device``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import torch

from export.errors import ExportError, RunnerUnavailableError
from export.manifest import Manifest, SegmentEntry
from export.onnx import ensure_exported
from export.segments import TOWERS
from model.backbone import TriModalBackbone

if TYPE_CHECKING:
    from export.onnxruntime_runner import OrtSegment

log = logging.getLogger("export")

RUNNER_KINDS = ("tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime", "pytorch")
"""Every runner kind, in fallback order."""


class SegmentFn(Protocol):
    """One compiled segment: tensors in (manifest input order), tensors out (manifest output order)."""

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]: ...


def _on(device: torch.device, outputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """A segment's outputs on the caller's ``device`` (no copy where they already are)."""
    return tuple(o.to(device) for o in outputs)


class SegmentedTower:
    """A tower's frozen pieces on compiled segments (implements :class:`model.towers.FrozenRunner`)."""

    def __init__(self, stem: SegmentFn, blocks: list[SegmentFn], head: SegmentFn, with_ctx: bool) -> None:
        self._stem = stem
        self._blocks = blocks
        self._head = head
        self.with_ctx = with_ctx

    def stem(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = _on(inputs.device, self._stem(inputs))
        return (out[0], out[1]) if self.with_ctx else (out[0], None)

    def block(self, index: int, x: torch.Tensor, ctx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._blocks[index](x, ctx) if self.with_ctx and ctx is not None else self._blocks[index](x)
        y, h = _on(x.device, out)
        return y, h

    def head(self, x: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
        out = self._head(x, ctx) if self.with_ctx and ctx is not None else self._head(x)
        return out[0].to(x.device)


class SegmentedAudio:
    """The frozen audio encoder on one compiled segment: ``(B, S) -> (B, audio_dim)``."""

    def __init__(self, encoder: SegmentFn) -> None:
        self._encoder = encoder

    def __call__(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self._encoder(waveforms)[0].to(waveforms.device)


def install_segments(backbone: TriModalBackbone, manifest: Manifest, open_segment: Callable[[SegmentEntry], SegmentFn]) -> None:
    """Opens every segment of ``manifest`` with ``open_segment`` and sets the backbone's runners.

    An ``external`` audio segment (an encoder that already runs its own ONNX files) keeps running
    itself. Everything is opened before anything is set, so a failure leaves the backbone unchanged.
    """
    towers: dict[str, SegmentedTower] = {}
    for name in TOWERS:
        entries = [s for s in manifest.segments if s.tower == name]
        stem = [s for s in entries if s.role == "stem"]
        head = [s for s in entries if s.role == "head"]
        blocks = sorted((s for s in entries if s.role == "block"), key=lambda s: s.index or 0)
        n_blocks = len(getattr(backbone, name).blocks)
        if len(stem) != 1 or len(head) != 1 or len(blocks) != n_blocks:
            raise ExportError(f"manifest: tower {name!r} needs a stem, {n_blocks} blocks and a head")
        towers[name] = SegmentedTower(open_segment(stem[0]), [open_segment(b) for b in blocks],
                                      open_segment(head[0]), with_ctx=len(stem[0].outputs) == 2)
    audio_entry = manifest.segment("audio.encoder")
    audio = None if audio_entry.is_external else SegmentedAudio(open_segment(audio_entry))
    for name, runner in towers.items():
        getattr(backbone, name).set_runner(runner)
    backbone.set_audio_runner(audio)


def detach_runner(backbone: TriModalBackbone) -> None:
    """Back to PyTorch for every frozen piece."""
    for name in TOWERS:
        getattr(backbone, name).set_runner(None)
    backbone.set_audio_runner(None)


def check_available(kind: str) -> None:
    """Raises :class:`RunnerUnavailableError` naming what ``kind`` lacks on this machine."""
    if kind == "pytorch":
        return
    if kind == "tensorrt":
        from export import tensorrt_runner

        tensorrt_runner.check_available()
        return
    from export import onnxruntime_runner

    onnxruntime_runner.check_available(kind)


def default_artifacts_dir(preset: str) -> Path:
    """``$XDG_CACHE_HOME/mcil-daemon/export/<preset>`` (``~/.cache`` when unset)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "mcil-daemon" / "export" / preset


def attach_runner(
    backbone: TriModalBackbone,
    kind: str,
    artifacts_dir: Path | None = None,
    *,
    fallback: bool = True,
    precision: str = "fp32",
    threads: int | None = None,
) -> str:
    """Runs the backbone's frozen segments on ``kind`` and returns the runner actually in use.

    Args:
        backbone: the backbone to serve; its frozen pieces are checked against the manifest's
            weight hashes (a mismatch, a missing or changed file, means a fresh export).
        kind: one of :data:`RUNNER_KINDS`.
        artifacts_dir: folder of ``manifest.json`` and the ONNX/engine files; exported there on first
            use. ``None``: :func:`default_artifacts_dir` of the backbone's preset.
        fallback: if ``kind`` cannot run here, try the kinds after it in :data:`RUNNER_KINDS`
            (``pytorch`` always can); if ``False``, raise :class:`RunnerUnavailableError` instead.
        precision: ``fp32`` or ``fp16`` segment files (``fp16`` is meant for GPU runners).
        threads: ONNX Runtime intra-op threads (``None``: 1, the calling thread; see docs/export.md).

    Raises:
        ValueError: unknown ``kind`` or ``precision``.
        RunnerUnavailableError: ``fallback=False`` and ``kind`` cannot run here.
    """
    if kind not in RUNNER_KINDS:
        raise ValueError(f"runner: unknown {kind!r}; choose one of {list(RUNNER_KINDS)}")
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision: must be 'fp32' or 'fp16', got {precision!r}")
    folder = Path(artifacts_dir) if artifacts_dir is not None else default_artifacts_dir(backbone.config.name)
    candidates = RUNNER_KINDS[RUNNER_KINDS.index(kind):] if fallback else (kind,)
    for candidate in candidates:
        try:
            detail = _attach(backbone, candidate, folder, precision, threads)
        except (RunnerUnavailableError, ExportError) as exc:
            if not fallback or candidate == "pytorch":
                raise
            log.warning("frozen backbone runner %s unavailable (%s); trying the next one", candidate, exc)
            continue
        log.info("frozen backbone runner: %s (%s)", candidate, detail)
        return candidate
    raise AssertionError("unreachable: the pytorch runner always attaches")


_OPEN_SESSIONS: dict[tuple[object, ...], "OrtSegment"] = {}


def _attach(backbone: TriModalBackbone, kind: str, folder: Path, precision: str, threads: int | None) -> str:
    check_available(kind)
    if kind == "pytorch":
        detach_runner(backbone)
        return "eager PyTorch modules"
    manifest, exported = ensure_exported(backbone, folder, precisions=(precision,))
    source = f"{'exported to' if exported else 'manifest in'} {folder}"
    if kind == "tensorrt":
        from export import tensorrt_runner

        engines = tensorrt_runner.ensure_engines(manifest, folder, precision=precision)
        install_segments(backbone, manifest, lambda e: tensorrt_runner.TrtSegment(engines[e.name], e))
        return f"{precision} engines, {source}"

    from export.onnxruntime_runner import OrtSegment, OrtSettings

    settings = OrtSettings() if threads is None else OrtSettings(threads=threads)
    opened: list[OrtSegment] = []

    def open_segment(entry: SegmentEntry) -> SegmentFn:
        # Sessions are shared by every backbone attached to the same file (each served model version).
        key = (kind, str((folder / entry.files[precision].path).resolve()), entry.files[precision].sha256, settings)
        segment = _OPEN_SESSIONS.get(key)
        if segment is None:
            segment = _OPEN_SESSIONS[key] = OrtSegment(folder / entry.files[precision].path, entry, kind, settings)
        opened.append(segment)
        return segment

    install_segments(backbone, manifest, open_segment)
    providers = opened[0].providers if opened else []
    return f"{precision}, providers {providers}, {opened[0].threads if opened else settings.threads} intra-op thread(s), {source}"
