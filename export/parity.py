"""``python -m export.parity``: how far the hybrid forward is from the PyTorch forward, per preset and runner.

For each preset: a backbone with one task of random (non-zero) experts; a fixed batch of 8 images,
8 clips (tones with noise, filling the clip) and 5 class names. Prints the max abs difference of the
image, projected audio and text features between the runner and eager PyTorch, and whether the top-1
class (cosine similarity with the text prototypes) agrees for every image and every clip. The tests
assert the same (tests/export/test_parity.py); this command prints the figures.

    python -m export.parity --preset tiny lite --runner onnxruntime --precision fp32 fp16
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Sequence

import torch
from torch.nn import functional as F

from export.errors import RunnerUnavailableError
from export.onnx import configure_logging, ensure_exported
from export.runners import RUNNER_KINDS, attach_runner, detach_runner
from model.backbone import TriModalBackbone, build_backbone

CLASS_NAMES = ("a teacher lecturing", "a student raising a hand", "applause", "a door closing", "silence")


def add_random_experts(backbone: TriModalBackbone, task: str = "task1", seed: int = 1) -> None:
    backbone.add_task_experts(task, 2)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in backbone.named_parameters():
            if ".adapters." in name and f".{task}" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def fixed_batch(backbone: TriModalBackbone, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    images = torch.randn(batch, 3, backbone.image_size, backbone.image_size, generator=g)  # (B, 3, H, W)
    t = torch.arange(backbone.clip_samples) / backbone.sample_rate
    pitch = 200.0 + 100.0 * torch.arange(batch)[:, None]
    waves = 0.3 * torch.sin(2 * torch.pi * pitch * t) + 0.05 * torch.randn(batch, t.numel(), generator=g)  # (B, S)
    return images, waves.float()


@torch.no_grad()
def features(backbone: TriModalBackbone, images: torch.Tensor, waves: torch.Tensor) -> dict[str, torch.Tensor]:
    device = next(backbone.parameters()).device
    out = {"image": backbone.encode_image(images.to(device)), "audio": backbone.encode_audio(waves.to(device)),
           "text": backbone.encode_text(CLASS_NAMES)}
    protos = F.normalize(out["text"], dim=-1)
    out["image_top1"] = (F.normalize(out["image"], dim=-1) @ protos.T).argmax(-1)
    out["audio_top1"] = (F.normalize(out["audio"], dim=-1) @ protos.T).argmax(-1)
    return out


def compare(preset: str, kind: str, precision: str, folder: Path) -> str:
    backbone = build_backbone(preset)
    if kind in ("onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt"):
        backbone = backbone.to("cuda")
    add_random_experts(backbone)
    images, waves = fixed_batch(backbone)
    eager = features(backbone, images, waves)
    ensure_exported(backbone, folder, precisions=(precision,))
    try:
        attach_runner(backbone, kind, folder, fallback=False, precision=precision)
    except RunnerUnavailableError as exc:
        return f"| {preset} | {kind} | {precision} | not run: {exc.missing} | | | |"
    hybrid = features(backbone, images, waves)
    detach_runner(backbone)
    diffs = [float((eager[k] - hybrid[k]).abs().max()) for k in ("image", "audio", "text")]
    top1 = all(torch.equal(eager[k], hybrid[k]) for k in ("image_top1", "audio_top1"))
    return (f"| {preset} | {kind} | {precision} | {diffs[0]:.1e} | {diffs[1]:.1e} | {diffs[2]:.1e} | "
            f"{'identical' if top1 else 'DIFFERENT'} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.parity", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", nargs="+", default=["tiny", "lite"])
    parser.add_argument("--runner", nargs="+", default=["onnxruntime"], choices=RUNNER_KINDS[:-1])
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=("fp32", "fp16"))
    parser.add_argument("--artifacts", type=Path, default=None, help="export folder root (default: temporary)")
    args = parser.parse_args(argv)
    configure_logging()
    rows = ["| preset | runner | precision | image max abs diff | audio | text | top-1 (8 images, 8 clips) |",
            "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.artifacts or Path(tmp)
        for preset in args.preset:
            for kind in args.runner:
                for precision in args.precision:
                    rows.append(compare(preset, kind, precision, root / preset))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
