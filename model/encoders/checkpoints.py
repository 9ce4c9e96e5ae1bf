"""Strict loading of weight files into encoders: every tensor accounted for, or an error naming one.

Files are read by :func:`read_state_dict`:

- ``.safetensors`` files with :mod:`safetensors`;
- TorchScript archives (OpenAI's released CLIP ``.pt`` files are these) with ``torch.jit.load``,
  keeping only their ``state_dict()``;
- any other file with ``torch.load(weights_only=True)`` (plain tensors only, no pickled code); a
  dict holding the tensors under ``"state_dict"`` is unwrapped.

:func:`load_strict` then checks the file against a module and raises
:class:`~model.errors.CheckpointError` for the first missing, unexpected or mis-shaped tensor, before
changing anything. Keys ending in ``num_batches_tracked`` (batch-norm step counters, unused in
evaluation) may be absent from a file; nothing else may.

Two published layouts are mapped onto this project's modules:

- OpenAI CLIP (:func:`load_clip_weights`): ``visual.*`` is open_clip's ``VisionTransformer``
  (same names once the prefix is dropped); ``token_embedding.*``, ``positional_embedding``,
  ``transformer.*``, ``ln_final.*`` and ``text_projection`` are open_clip's ``TextTransformer``.
  Ignored on purpose: ``logit_scale`` (the backbone's scale is a config value) and the
  TorchScript metadata ``input_resolution``, ``context_length``, ``vocab_size``.
- AudioCLIP (:func:`load_audioclip_audio_weights`): ``audio.*`` is
  :class:`~model.encoders.esresnext.ESResNeXtFBSP`. AudioCLIP's released checkpoints also hold its
  own CLIP (a ResNet-50 image encoder: ``visual.*``, and a text transformer), ``logit_scale``,
  ``logit_scale_ai`` and ``logit_scale_at``; only the audio tensors are used, the image and text
  encoders come from the CLIP ViT-B/16 file.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from model.errors import CheckpointError

OPTIONAL_SUFFIXES = ("num_batches_tracked",)
"""Module tensors a file may omit (they keep their constructed value)."""

CLIP_IGNORED_KEYS = frozenset({"logit_scale", "input_resolution", "context_length", "vocab_size"})
"""Top-level tensors of OpenAI's CLIP files that no module here holds."""

CLIP_VISUAL_PREFIX = "visual."
AUDIOCLIP_AUDIO_PREFIX = "audio."


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads the tensors of a weight file (safetensors, TorchScript archive or ``torch.save``)."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise CheckpointError(source, "*", "no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(source, "*", f"not a readable safetensors file: {exc}") from None
    if _is_torchscript_archive(path):
        try:
            # OpenAI distributes CLIP as TorchScript archives, which only torch.jit.load reads; its
            # deprecation notice concerns writing new TorchScript and is silenced for this call only.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", DeprecationWarning)
                archive = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
                return dict(archive.state_dict())
        except RuntimeError as exc:
            raise CheckpointError(source, "*", f"not a readable TorchScript archive: {exc}") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(source, "*", f"not a readable tensor file: {exc}") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(source, "*", f"expected a dict of tensors, found {type(obj).__name__}")
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(source, str(key), f"expected a tensor, found {type(value).__name__}")
    return dict(obj)


def _is_torchscript_archive(path: Path) -> bool:
    # torch.jit.save writes a zip with a code/ folder and constants.pkl; torch.save's zips have neither.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def check_state(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    *,
    prefix: str = "",
    optional_suffixes: Iterable[str] = OPTIONAL_SUFFIXES,
) -> None:
    """Checks that ``state`` matches ``module``'s tensors exactly, without loading anything.

    ``state``'s keys are the module's own names; ``prefix`` is what they were called in the file
    (``"visual."``, ``"audio."``), used in error messages so the key named is the file's.

    Raises:
        CheckpointError: naming the first tensor of the module missing from ``state`` (in module
            order), else the first tensor of ``state`` the module lacks (in file order), else the
            first one whose shape differs (both shapes given).
    """
    expected = module.state_dict()
    optional = tuple(optional_suffixes)
    for key in expected:
        if key not in state and not key.endswith(optional):
            raise CheckpointError(source, prefix + key, "missing from the file")
    for key in state:
        if key not in expected:
            raise CheckpointError(source, prefix + key, "unexpected: the model has no such tensor")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                source,
                prefix + key,
                f"shape {tuple(value.shape)} in the file, {tuple(expected[key].shape)} in the model",
            )


def load_strict(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    *,
    prefix: str = "",
    optional_suffixes: Iterable[str] = OPTIONAL_SUFFIXES,
) -> None:
    """Loads ``state`` into ``module`` if :func:`check_state` passes; otherwise changes nothing."""
    check_state(module, state, source, prefix=prefix, optional_suffixes=optional_suffixes)
    module.load_state_dict(dict(state), strict=False)


def split_clip_state(
    state: Mapping[str, torch.Tensor], source: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """OpenAI CLIP tensors -> (vision transformer state, text transformer state), open_clip names.

    Everything that is neither ``visual.*`` nor an ignored key is attributed to the text
    transformer, so a stray tensor is reported as unexpected there.
    """
    vision, text = {}, {}
    for key, value in state.items():
        if key.startswith(CLIP_VISUAL_PREFIX):
            vision[key[len(CLIP_VISUAL_PREFIX):]] = value
        elif key not in CLIP_IGNORED_KEYS:
            text[key] = value
    if not vision:
        raise CheckpointError(source, "visual.*", "no image encoder tensors; is this an OpenAI CLIP file?")
    return vision, text


def load_clip_weights(
    vision: nn.Module, text: nn.Module, state: Mapping[str, torch.Tensor], source: str
) -> None:
    """Loads an OpenAI CLIP state into open_clip's ``VisionTransformer`` and ``TextTransformer``.

    Both are checked before either is changed.
    """
    vision_state, text_state = split_clip_state(state, source)
    check_state(vision, vision_state, source, prefix=CLIP_VISUAL_PREFIX)
    check_state(text, text_state, source)
    load_strict(vision, vision_state, source, prefix=CLIP_VISUAL_PREFIX)
    load_strict(text, text_state, source)


def audioclip_audio_state(state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The ``audio.*`` tensors of an AudioCLIP checkpoint, prefix dropped."""
    n = len(AUDIOCLIP_AUDIO_PREFIX)
    audio = {k[n:]: v for k, v in state.items() if k.startswith(AUDIOCLIP_AUDIO_PREFIX)}
    if not audio:
        raise CheckpointError(
            source, "audio.*", "no audio encoder tensors; expected an AudioCLIP checkpoint such as "
            "AudioCLIP-Full-Training.pt, whose audio encoder tensors are prefixed 'audio.'",
        )
    return audio


def load_audioclip_audio_weights(encoder: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Loads the ``audio.*`` tensors of an AudioCLIP checkpoint into an ESResNeXt-fbsp encoder."""
    load_strict(encoder, audioclip_audio_state(state, source), source, prefix=AUDIOCLIP_AUDIO_PREFIX)
