"""A base's frozen encoders as ONNX graphs: compiled once, shared by every version over it.

    <state_dir>/bases/<digest>/   base.json, image.onnx [, sounds.onnx, sounds.npz, speech files,
                                  embedding_whole_clip.onnx]
                                  (written by ``python -m export.base``)

    base = BaseGraphs.load(folder, threads=2)
    base.image_features(images)          # (B, 3, S, S) model-ready pictures -> (B, D) float32
    base.audio_features(waves)           # (B, clip_samples) 16 kHz sound -> (B, audio_dim), lite only
    fast = base.with_int8(int8_folder(folder), threads=2)   # its image encoder in int8 (export/int8.py)

A *base* is what a version's features are computed by: the preset's frozen encoders. The default
learner never changes them, so every version over a base reads the same features, and only its head
(``serving/head.py``) differs: the graphs are built once per base (its digest names the frozen
tensors and files, the input size and how the graphs are built) and a commit never waits for a
compile. ``base.json`` also says how inputs are prepared (``serving/inputs.py``), so that a base and a
head answer a raw picture and sound without PyTorch (``serving/features.py``); a base of a preset
whose audio encoder it does not hold (``"audio": null``: the CLIP family) computes image features only.

The folder is a cache. ``base.json`` names the digest and every file's checksum; a folder that does
not match is refused by name (:class:`BaseGraphsError`) and built again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.errors import BaseGraphsError
from serving.sessions import CPU, Placement, placed_session

if TYPE_CHECKING:
    import onnxruntime

    from serving.sounds import SoundEvents
    from serving.speech import SpeechWindows

FORMAT = 2  # 2: the lite audio encoder's files, how inputs are prepared, every file's checksum
META_FILE = "base.json"
IMAGE_GRAPH = "image.onnx"
SOUNDS_GRAPH = "sounds.onnx"
SOUNDS_FRONT_END = "sounds.npz"
SPEECH_FILES = ("melspectrogram.onnx", "embedding_model.onnx")
SPEECH_WHOLE_CLIP = "embedding_whole_clip.onnx"  # embedding_model.onnx over whole clips (serving/speech_graph.py)
INT8_SUFFIX = ".int8"  # <digest>.int8/: its image encoder in int8, calibrated here (export/int8.py)
INT8_META = "int8.json"
INT8_FORMAT = 1
TRT_SUFFIX = ".trt-"  # <digest>.trt-fp16/: TensorRT engines of its graphs (export/trt_base.py)
TRT_META = "trt.json"  # written last, once every graph's engines are built
CHUNK = 16
"""Images per graph call: the activations of 16 pictures at 160 px stay under 150 MB (``lite``)."""


@dataclass
class BaseGraphs:
    """The base's graphs on ONNX Runtime (module docstring)."""

    digest: str
    image_size: int
    feature_dim: int
    session: "onnxruntime.InferenceSession"
    meta: dict[str, Any]
    speech: "SpeechWindows | None" = None
    sounds: "SoundEvents | None" = None
    precision: str = "fp32"  # "int8": the image graph of with_int8()
    placement: Placement = CPU  # where the graphs run (serving/sessions.py)

    @staticmethod
    def present(folder: Path) -> bool:
        return (folder / META_FILE).is_file()

    @property
    def has_audio(self) -> bool:
        return self.speech is not None and self.sounds is not None

    @classmethod
    def load(cls, folder: Path, threads: int, digest: str | None = None, placement: Placement = CPU) -> "BaseGraphs":
        """The graphs in ``folder`` on ``placement`` (TensorRT engines cached in :func:`trt_folder`
        unless it names a cache); ``digest``: the base it must be. Raises :class:`BaseGraphsError`."""
        if placement.kind == "tensorrt" and placement.cache is None:
            placement = placement.with_cache(trt_folder(folder, placement.precision))
        meta = _read_meta(folder / META_FILE, FORMAT)
        if digest is not None and meta.get("digest") != digest:
            raise BaseGraphsError(f"{META_FILE}.digest", f"the graphs are of base {meta.get('digest')}, not {digest}")
        files: dict[str, bytes] = {}
        for name, expected in dict(meta.get("sha256") or {}).items():
            files[name] = _checked_bytes(folder / name, expected, field=name, listed_in=META_FILE)
        if IMAGE_GRAPH not in files:
            raise BaseGraphsError(f"{META_FILE}.sha256", f"names no {IMAGE_GRAPH}")
        try:
            own, size, dim = str(meta["digest"]), int(meta["image_size"]), int(meta["feature_dim"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BaseGraphsError(META_FILE, f"malformed: {type(exc).__name__}: {exc}") from None
        # TensorRT takes the image graph, one engine for every batch served; the audio graphs, whose
        # shapes vary with each clip, run on the same GPU through CUDA
        pictures = placement if placement.kind != "tensorrt" else dataclasses.replace(
            placement, profile=("images", (1, 3, size, size), (CHUNK, 3, size, size), (CHUNK, 3, size, size)))
        base = cls(own, size, dim, _session(files, IMAGE_GRAPH, threads, pictures), meta,
                   placement=placement)
        sounds = placement.on_cuda()
        if meta.get("audio") == "speech+sounds":
            from serving.sounds import SoundEvents
            from serving.speech import SpeechWindows

            for name in SPEECH_FILES:
                if name not in files:
                    raise BaseGraphsError(f"{META_FILE}.sha256", f"names no {name}")
            try:
                base.speech = SpeechWindows.from_bytes(files[SPEECH_FILES[0]], files[SPEECH_FILES[1]],
                                                       session=lambda model: placed_session(model, threads, sounds),
                                                       whole_clip=files.get(SPEECH_WHOLE_CLIP))
            except Exception as exc:  # ONNX's and ONNX Runtime's own types for a damaged or other file
                raise BaseGraphsError(", ".join(name for name in (*SPEECH_FILES, SPEECH_WHOLE_CLIP) if name in files),
                                      f"cannot load: {type(exc).__name__}: {exc}") from None
            try:
                with np.load(io.BytesIO(files[SOUNDS_FRONT_END]), allow_pickle=False) as front:
                    window, mel = front["window"], front["mel_weights"]
            except (KeyError, ValueError, OSError) as exc:
                raise BaseGraphsError(SOUNDS_FRONT_END, f"missing or malformed: {exc}") from None
            base.sounds = SoundEvents(_session(files, SOUNDS_GRAPH, threads, sounds), window, mel)
        return base

    def with_int8(self, folder: Path, threads: int) -> "BaseGraphs":
        """This base with its image encoder in int8, from ``folder`` (``<digest>.int8/``, written by
        ``python -m export.int8``); the audio encoder is shared. Raises :class:`BaseGraphsError`
        naming what is missing, damaged or of another base."""
        if self.placement.on_gpu:
            raise BaseGraphsError("placement", f"the int8 image graph runs on the CPU, this base on {self.placement.describe()}")
        info = _read_meta(folder / INT8_META, INT8_FORMAT)
        if info.get("base") != self.digest:
            raise BaseGraphsError(f"{INT8_META}.base", f"the graph is of base {info.get('base')}, not {self.digest}")
        graph = _checked_bytes(folder / IMAGE_GRAPH, dict(info.get("sha256") or {}).get(IMAGE_GRAPH),
                               field=str(folder / IMAGE_GRAPH), listed_in=INT8_META)
        return dataclasses.replace(self, session=_session({IMAGE_GRAPH: graph}, IMAGE_GRAPH, threads), precision="int8")

    def image_features(self, images: np.ndarray) -> np.ndarray:
        """``(B, 3, S, S)`` model-ready images -> ``(B, D)`` float32 frozen features, ``CHUNK`` at a time."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != (3, self.image_size, self.image_size):
            raise BaseGraphsError("images", f"shape {images.shape}, expected (B, 3, {self.image_size}, "
                                  f"{self.image_size})")
        out = [self.session.run(None, {"images": images[i:i + CHUNK]})[0] for i in range(0, len(images), CHUNK)]
        if not out:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    def audio_features(self, waves: np.ndarray) -> np.ndarray:
        """``(B, clip_samples)`` prepared 16 kHz sound -> ``(B, 192 + 1024)`` float32: the speech
        embedding made unit-length, then YAMNet's sound events (``model/encoders/lite_audio.py``)."""
        if self.speech is None or self.sounds is None:
            raise BaseGraphsError(f"{META_FILE}.audio", "this base does not hold its audio encoder")
        speech = self.speech.embed(waves)
        speech = speech / np.maximum(np.sqrt((speech * speech).sum(axis=1, keepdims=True)), np.float32(1e-12))
        return np.concatenate([speech, self.sounds.embed(waves)], axis=1).astype(np.float32)


def _read_meta(path: Path, expected_format: int) -> dict[str, Any]:
    """A folder's JSON description (``base.json``, ``int8.json``), of the format this build reads."""
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BaseGraphsError(str(path), f"missing or unreadable: {exc}") from None
    if meta.get("format") != expected_format:
        raise BaseGraphsError(f"{path.name}.format", f"format {meta.get('format')!r}, this build reads {expected_format}")
    return meta


def _checked_bytes(path: Path, expected: str | None, field: str, listed_in: str) -> bytes:
    """``path``'s bytes, if their SHA-256 is ``expected`` (as ``listed_in`` lists it); else an error
    naming ``field``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BaseGraphsError(field, f"cannot read: {exc}") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise BaseGraphsError(field, f"does not match its checksum in {listed_in}")
    return data


def int8_folder(base_folder: Path) -> Path:
    """Where the int8 image graph of the base in ``base_folder`` is kept: beside it, not in it (it is
    calibrated on this daemon's pictures, so not part of what a base's digest names)."""
    return base_folder.with_name(base_folder.name + INT8_SUFFIX)


def trt_folder(base_folder: Path, precision: str) -> Path:
    """Where TensorRT engines of the base in ``base_folder`` are kept, for engines of ``precision``:
    beside it, as they are of this GPU and this TensorRT, not of the base alone."""
    return base_folder.with_name(base_folder.name + TRT_SUFFIX + precision)


def engines_ready(base_folder: Path, placement: Placement) -> bool:
    """Whether ``placement`` can serve the base in ``base_folder`` without building anything: always
    but for TensorRT, whose engines must have been built (``trt.json``) by this ONNX Runtime for
    this GPU number. ``trt.json`` does not record the GPU's model or TensorRT's version: after changing
    either, run ``python -m export.trt --base`` again (or delete the folder), or ONNX Runtime may
    build the engine itself while the base loads (possibly minutes, in the process that loads it)."""
    import onnxruntime as ort

    if placement.kind != "tensorrt":
        return True
    try:
        info = json.loads((trt_folder(base_folder, placement.precision) / TRT_META).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and (info.get("base"), info.get("device_id"), info.get("onnxruntime")) == \
        (base_folder.name, placement.device_id, ort.__version__)


def _session(files: dict[str, bytes], name: str, threads: int,
             placement: Placement = CPU) -> "onnxruntime.InferenceSession":
    if name not in files:
        raise BaseGraphsError(f"{META_FILE}.sha256", f"names no {name}")
    try:
        return placed_session(files[name], threads, placement)
    except Exception as exc:  # ONNX Runtime raises its own types for a damaged file
        raise BaseGraphsError(name, f"cannot load: {type(exc).__name__}: {exc}") from None
