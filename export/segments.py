"""Where the frozen backbone is cut into exportable segments, and what each segment reads and writes.

A :class:`~model.towers.Tower` is ``stem -> block_0 .. block_{n-1} -> head`` with one mixture of
experts after every block (DESIGN.md, "The frozen/trainable split"). Each frozen piece becomes one
segment with a tensor-only signature; the experts stay in PyTorch between them::

    image.stem     images (B, 3, H, W)        -> x (B, N, D) [, ctx]
    image.block.i  x (B, N, D) [, ctx]        -> y (B, N, D), h (B, N, D)     h: what the experts read
    image.head     x (B, N, D) [, ctx]        -> feature (B, E)
    text.*         the same, from tokens (B, L) int64; ctx is whatever the text stem passes on
    audio.encoder  waveforms (B, S)           -> feature (B, audio_dim)       frozen whole, one segment

``ctx`` (an attention mask, the token ids) is a segment input only where the stem produces one.
The weights hash of a segment covers exactly the tensors of the frozen piece it was cut from, so a
manifest can be checked against a backbone without re-exporting anything.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from export.manifest import file_sha256
from model.backbone import TriModalBackbone
from model.towers import Tower

TOWERS = ("image", "text")
"""The adaptable towers, in export order; the audio encoder comes after them."""

STEM_INPUT_NAMES = {"image": "images", "text": "tokens", "audio": "waveforms"}


@dataclass(frozen=True)
class Segment:
    """One frozen piece of the backbone, wrapped so the exporter sees tensors in and tensors out.

    ``module`` is the wrapper that is exported; ``source`` is the backbone's own frozen module whose
    weights the segment holds (shared, never copied).
    """

    name: str
    tower: str
    role: str  # "stem" | "block" | "head" | "encoder" | "external" (an encoder that is already ONNX)
    index: int | None
    module: nn.Module
    source: nn.Module
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    max_sequence: int | None = None  # text towers whose tokenizer pads to the longest: dim 1 of every input

    def weights_sha256(self) -> str:
        files = external_onnx_files(self.source) if self.role == "external" else None
        if files is not None:  # an encoder that is already ONNX: its weights are its files
            digest = hashlib.sha256()
            for f in files:
                digest.update(f"{f.name}|{file_sha256(f)}|".encode())
            return digest.hexdigest()
        return weights_sha256(self.source)


class _StemSegment(nn.Module):
    def __init__(self, stem: nn.Module, with_ctx: bool) -> None:
        super().__init__()
        self.stem = stem
        self.with_ctx = with_ctx

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, ctx = self.stem(inputs)
        return (x, ctx) if self.with_ctx else (x,)


class _BlockSegment(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        y, h = self.block(x, ctx)
        return y, h


class _HeadSegment(nn.Module):
    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        out: torch.Tensor = self.head(x, ctx)
        return out


class _AudioSegment(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.encoder(waveforms)
        return out


def stem_has_ctx(tower: Tower, example: torch.Tensor) -> bool:
    """Whether the tower's stem hands a ``ctx`` tensor to its blocks and head (text: yes, images: no)."""
    with torch.no_grad():
        _, ctx = tower.stem(example)
    return ctx is not None


def tower_segments(name: str, tower: Tower, with_ctx: bool, max_sequence: int | None = None) -> list[Segment]:
    """The tower's stem, blocks and head as segments, in the order the forward runs them.

    ``max_sequence``: the longest token sequence, when dimension 1 of every input varies (text padded
    to the longest in the batch); ``None`` when the shapes past the batch dimension are fixed.
    """
    ctx_in = ("ctx",) if with_ctx else ()
    seq = max_sequence
    segments = [
        Segment(f"{name}.stem", name, "stem", None, _StemSegment(tower.stem, with_ctx), tower.stem,
                (STEM_INPUT_NAMES[name],), ("x", *ctx_in), seq),
    ]
    for i, block in enumerate(tower.blocks):
        segments.append(
            Segment(f"{name}.block.{i}", name, "block", i, _BlockSegment(block), block, ("x", *ctx_in), ("y", "h"), seq)
        )
    segments.append(Segment(f"{name}.head", name, "head", None, _HeadSegment(tower.head), tower.head,
                            ("x", *ctx_in), ("feature",), seq))
    return segments


def token_length_range(backbone: TriModalBackbone) -> tuple[int, int]:
    """Shortest and longest token sequence the backbone's tokenizer produces (equal if it pads to a fixed length)."""
    short = backbone.tokenizer(["a"]).shape[1]
    long = backbone.tokenizer(["word " * 2048]).shape[1]  # truncated to the tokenizer's maximum
    return int(short), int(long)


def external_onnx_files(encoder: nn.Module) -> tuple[Path, ...] | None:
    """The ONNX files an encoder already runs on ONNX Runtime itself, or ``None`` for a PyTorch encoder.

    An encoder declares them with an ``onnx_files`` attribute; the ``lite`` speech embedding (two
    openWakeWord models glued by NumPy) is recognised by its ``melspectrogram_path`` and
    ``embedding_path``. Such an encoder is not re-exported: its segment is those files, and it keeps
    running them itself (see docs/export.md).
    """
    files = getattr(encoder, "onnx_files", None)
    if files is None and hasattr(encoder, "melspectrogram_path") and hasattr(encoder, "embedding_path"):
        files = (encoder.melspectrogram_path, encoder.embedding_path)
    return None if files is None else tuple(Path(f) for f in files)


def audio_segment(backbone: TriModalBackbone) -> Segment:
    external = external_onnx_files(backbone.audio) is not None
    return Segment("audio.encoder", "audio", "external" if external else "encoder", None,
                   _AudioSegment(backbone.audio), backbone.audio, ("waveforms",), ("feature",))


def example_inputs(backbone: TriModalBackbone, batch: int = 2) -> dict[str, torch.Tensor]:
    """Deterministic stem inputs for tracing: images, tokens and waveforms of batch ``batch``.

    ``batch`` must be at least 2: the exporter specialises a dimension it sees as 1.
    """
    if batch < 2:
        raise ValueError(f"batch: must be >= 2 for tracing a dynamic batch, got {batch}")
    g = torch.Generator().manual_seed(0)
    size = backbone.image_size
    prompts = ["a photo of a teacher lecturing to a class", "applause"] * batch
    return {
        "image": torch.randn(batch, 3, size, size, generator=g),  # (B, 3, H, W)
        "text": backbone.tokenizer(prompts[:batch]),  # (B, L)
        "audio": 0.1 * torch.randn(batch, backbone.clip_samples, generator=g),  # (B, S)
    }


def backbone_segments(backbone: TriModalBackbone) -> list[Segment]:
    """Every segment of the backbone, in manifest order: image tower, text tower, audio encoder."""
    examples = example_inputs(backbone)
    segments: list[Segment] = []
    short, long = token_length_range(backbone)
    for name in TOWERS:
        tower: Tower = getattr(backbone, name)
        max_sequence = long if name == "text" and short != long else None
        segments += tower_segments(name, tower, stem_has_ctx(tower, examples[name]), max_sequence)
    segments.append(audio_segment(backbone))
    return segments


@torch.no_grad()
def segment_example_args(backbone: TriModalBackbone, segments: list[Segment]) -> dict[str, tuple[torch.Tensor, ...]]:
    """The inputs each segment sees when the eager backbone runs the example batch (experts included)."""
    examples = example_inputs(backbone)
    args: dict[str, tuple[torch.Tensor, ...]] = {}
    for name in TOWERS:
        tower: Tower = getattr(backbone, name)
        stem_in = examples[name]
        args[f"{name}.stem"] = (stem_in,)
        x, ctx = tower.stem(stem_in)
        ctx_args = () if ctx is None else (ctx,)
        for i, (block, adapter) in enumerate(zip(tower.blocks, tower.adapters)):
            args[f"{name}.block.{i}"] = (x, *ctx_args)
            y, h = block(x, ctx)
            x = y + adapter(h) if adapter.n_experts else y
        args[f"{name}.head"] = (x, *ctx_args)
    args["audio.encoder"] = (examples["audio"],)
    return {s.name: args[s.name] for s in segments}


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 over a module's tensors (names, dtypes, shapes and bytes), in name order."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{key}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
