"""Building a base's image graph (``serving/base.py`` serves it), and ``python -m export.base``.

    python -m export.base --preset lite --out DIR [--weights clip=...] [--threads N]

writes ``image.onnx`` (the frozen image encoder, dynamic batch) and ``base.json`` (the base's digest,
how inputs are prepared, every file's checksum). For the ``lite`` preset it also writes the audio
encoder's files, so that a base computes a pair's features without PyTorch (``serving/base.py``):
the speech embedding's two ONNX files (copied), YAMNet's body as ``sounds.onnx`` and its front end's
window and mel matrix (``sounds.npz``). Each exported graph is checked against the eager module on
random inputs before anything is written; ``base.json`` is written last. The daemon runs this once per base, in a niced child process, and
keeps the result under ``<state_dir>/bases/<digest>/`` (``service/compiling.py``).

:func:`base_digest` names a base: the frozen image encoder's tensors, its input size, the audio
encoder's files and tensors when the base holds it, and ``serving.base.FORMAT``. Two daemons with the
same digest compute the same features.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import nn

from export.child import add_child_arguments, apply_child_arguments, write_synced
from export.errors import CompileError
from export.served_graphs import to_onnx
from model.backbone import TriModalBackbone
from serving.base import (
    FORMAT,
    IMAGE_GRAPH,
    META_FILE,
    SOUNDS_FRONT_END,
    SOUNDS_GRAPH,
    SPEECH_FILES,
    SPEECH_WHOLE_CLIP,
)
from serving.speech_graph import whole_clip_graph

if TYPE_CHECKING:
    from model.encoders.lite_audio import SpeechAndSounds
    from model.encoders.yamnet import YAMNet

TOLERANCE = 1e-4
"""Largest difference allowed between a graph's outputs and the eager module's, relative to the largest
output (at least 1)."""


def lite_audio(backbone: TriModalBackbone) -> "SpeechAndSounds | None":
    """The backbone's audio encoder when a base can hold it (``lite``'s speech + sounds), else None."""
    from model.encoders.lite_audio import SpeechAndSounds

    return backbone.audio if isinstance(backbone.audio, SpeechAndSounds) else None


def base_digest(backbone: TriModalBackbone) -> str:
    """sha256 of what the base's graphs compute from (module docstring)."""
    digest = hashlib.sha256(f"base format {FORMAT}|image_size {backbone.image_size}|".encode())
    modules = [("image", m) for m in backbone.image.frozen_modules()]
    audio = lite_audio(backbone)
    if audio is not None:
        modules.append(("sounds", audio.sounds))
        for path in audio.onnx_files:
            digest.update(f"{path.name}|".encode() + hashlib.sha256(path.read_bytes()).digest())
    for index, (part, module) in enumerate(modules):
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{part}.{index}.{name}|{tuple(t.shape)}|{t.dtype}|".encode())
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


class _SoundsBody(nn.Module):
    """YAMNet's network body: ``(N, 96, 64)`` log-mel patches -> ``(N, 1024)`` embeddings."""

    def __init__(self, sounds: "YAMNet") -> None:
        super().__init__()
        self.sounds = sounds

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:  # (patches,)
        out: torch.Tensor = self.sounds.embed_patches(inputs[0])
        return out


def _exported(module: nn.Module, example: torch.Tensor, name: str, output: str, what: str) -> tuple[bytes, float]:
    """``(ONNX bytes, largest difference from the eager module)`` of ``module`` (dynamic first axis)."""
    import onnxruntime as ort

    try:
        data = to_onnx(module, (example[:2],), [name], output)
    except Exception as exc:  # the exporter raises many unrelated types
        raise CompileError(what, f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    got = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {name: example.numpy()})[0]
    with torch.no_grad():
        want = module(example).numpy()
    worst = float(np.abs(got - want).max(initial=0.0))
    if got.shape != want.shape or not worst <= TOLERANCE * max(1.0, float(np.abs(want).max(initial=0.0))):
        raise CompileError(what, f"the graph differs from the eager module by {worst:g} (tolerance {TOLERANCE:g}, "
                           "relative to its largest output)")
    return data, worst


def export_base(backbone: TriModalBackbone, out: Path) -> dict[str, object]:
    """Exports, checks and writes the base's graphs into ``out``; returns ``base.json``'s content.
    Raises :class:`CompileError`."""
    started = time.perf_counter()
    size = backbone.image_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, size, size, generator=generator)
    image, worst = _exported(_FrozenImage(backbone).eval(), images, "images", "features", "base.image")
    files = {IMAGE_GRAPH: image}
    config = backbone.config
    meta: dict[str, object] = {
        "format": FORMAT, "digest": base_digest(backbone), "image_size": size,
        "feature_dim": int(backbone.image.output_dim), "image_mean": list(config.image_mean),
        "image_std": list(config.image_std), "sample_rate": backbone.sample_rate,
        "clip_samples": backbone.clip_samples, "audio_dim": backbone.audio_dim, "audio": None}
    differences = {"image": worst}
    audio = lite_audio(backbone)
    if audio is not None:
        patches = torch.randn(3, 96, 64, generator=generator)
        sounds, worst = _exported(_SoundsBody(audio.sounds).eval(), patches, "patches", "embeddings", "base.sounds")
        files[SOUNDS_GRAPH] = sounds
        for path, name in zip(audio.onnx_files, SPEECH_FILES):
            files[name] = path.read_bytes()
        files[SPEECH_WHOLE_CLIP] = whole_clip_graph(files[SPEECH_FILES[1]])  # so serving needs no onnx package
        front_end = io.BytesIO()
        np.savez(front_end, window=audio.sounds.window.numpy(), mel_weights=audio.sounds.mel_weights.numpy())
        files[SOUNDS_FRONT_END] = front_end.getvalue()
        meta["audio"] = "speech+sounds"
        differences["sounds"] = worst
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        write_synced(out / name, data)
    meta["largest_difference"] = differences
    meta["sha256"] = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    meta["seconds"] = round(time.perf_counter() - started, 2)
    write_synced(out / META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode())  # last: marks it whole
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    """Builds the image graph of PRESET's base into ``--out``; exit 1 (reason on stderr) if it cannot."""
    from export.onnx import add_weights_argument, configure_logging, parse_weights
    from model.backbone import build_backbone

    parser = argparse.ArgumentParser(prog="python -m export.base", description=main.__doc__)
    parser.add_argument("--preset", required=True, help="the backbone preset (tiny, lite, ...)")
    parser.add_argument("--out", required=True, type=Path, help="folder for base.json and image.onnx")
    add_weights_argument(parser)
    add_child_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging()
    apply_child_arguments(args, parser)
    try:
        meta = export_base(build_backbone(args.preset, parse_weights(args.weights)), args.out)
    except (CompileError, ValueError, OSError) as exc:
        print(f"cannot build the base of {args.preset}: {exc}", file=sys.stderr)
        return 1
    print(f"built base {str(meta['digest'])[:12]} of {args.preset} into {args.out} in {meta['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
