"""Decode request bytes into :class:`model.samples.Sample` arrays, and encode predictions back.

This is the only place in :mod:`service` that knows array layouts:

- images: an encoded file (anything Pillow reads: PNG, JPEG, BMP, GIF, WebP, TIFF) becomes
  ``(H, W, 3)`` uint8 (RGB; grey and palette images are converted, alpha is dropped); a raw tensor is
  ``(H, W)`` or ``(H, W, 1|3|4)``, uint8 or float32 in [0, 1];
- audio: a WAV/FLAC file becomes a mono float32 waveform (channels averaged) with its sample rate; a
  raw tensor is ``(N,)`` float32 in [-1, 1] with ``sample_rate``.

Every problem raises :class:`~service.errors.InvalidRequest` naming the field (``samples[3].image_bytes``).
"""

from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.errors import InvalidRequest

if TYPE_CHECKING:
    from model.samples import LabeledSample, Prediction, Sample
    from service._proto import mcil_pb2


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on what one sample may decode to (protect memory from hostile inputs)."""

    max_image_pixels: int = 4096 * 4096
    max_audio_seconds: float = 60.0
    min_audio_seconds: float = 0.1
    min_sample_rate: int = 8000
    max_sample_rate: int = 192000
    decode_side: int = 512  # larger images are reduced while decoding (every preset's input is <= 224 px)


LARGE_DECODES = 2
"""Images above ``decode_side`` decoded at once; more wait (each holds its full decoded size meanwhile)."""
_large_decodes = threading.BoundedSemaphore(LARGE_DECODES)
_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "RGBX", "I", "F")  # modes Pillow's reduce() takes as they are
MAX_TENSOR_DIMENSIONS = 4  # an image is (H, W[, C]), audio (N,); more is refused before numpy sees it


PATH_TO_PROTO = {"av": 1, "visual": 2, "audio": 3}
"""Model modality path -> ``mcil.v1.ModalityPath`` value."""

_DTYPES: dict[int, np.dtype[Any]] = {1: np.dtype(np.uint8), 2: np.dtype("<f4")}


def _tensor(field: str, t: "mcil_pb2.Tensor") -> np.ndarray:
    dtype = _DTYPES.get(t.dtype)
    if dtype is None:
        raise InvalidRequest(f"{field}.dtype", "must be DTYPE_UINT8 or DTYPE_FLOAT32")
    if len(t.shape) > MAX_TENSOR_DIMENSIONS:
        raise InvalidRequest(f"{field}.shape", f"at most {MAX_TENSOR_DIMENSIONS} dimensions, got {len(t.shape)}")
    shape = tuple(int(d) for d in t.shape)
    if not shape or any(d <= 0 for d in shape):
        raise InvalidRequest(f"{field}.shape", f"must be non-empty with positive dimensions, got {list(shape)}")
    expected = math.prod(shape) * dtype.itemsize
    if len(t.data) != expected:
        raise InvalidRequest(
            f"{field}.data", f"has {len(t.data)} bytes but shape {list(shape)} of {dtype.name} needs {expected}"
        )
    array: np.ndarray = np.frombuffer(t.data, dtype=dtype).reshape(shape).copy()  # writable, owns its memory
    return array


def decode_image_bytes(field: str, data: bytes, limits: DecodeLimits) -> np.ndarray:
    """An encoded image file -> ``(H, W, 3)`` uint8 RGB, reduced on the way so that its shorter side
    is at most about ``limits.decode_side`` (every preset's input is smaller; the model resizes it).

    Memory per image is bounded by what the model needs, not by the size a file declares: the size is
    checked from the header before any pixel is decoded, JPEGs decode straight at a reduced scale
    (``draft``), other formats are reduced by an integer factor right after decoding, and at most
    ``LARGE_DECODES`` images larger than that decode at once."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > limits.max_image_pixels:
                raise InvalidRequest(
                    field, f"image of {width}x{height} pixels exceeds the limit of {limits.max_image_pixels}"
                )
            factor = min(width, height) // limits.decode_side
            if factor < 2:
                return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()  # (H, W, 3)
            with _large_decodes:
                img.draft("RGB", (width // factor, height // factor))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
                factor = min(img.size) // limits.decode_side
                small: Image.Image = img
                if factor >= 2:  # reduce before converting: a conversion would copy the full size
                    small = img.reduce(factor) if img.mode in _REDUCIBLE else img.convert("RGB").reduce(factor)
                return np.asarray(small.convert("RGB"), dtype=np.uint8).copy()
    except InvalidRequest:
        raise
    except Image.DecompressionBombError:  # the header declares more pixels than Pillow's own bound
        raise InvalidRequest(field, f"image declares more than the limit of {limits.max_image_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidRequest(field, f"cannot decode image: {type(exc).__name__}") from None


def check_image(field: str, image: np.ndarray, limits: DecodeLimits) -> np.ndarray:
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise InvalidRequest(f"{field}.shape", f"expected (H, W) or (H, W, 1|3|4), got {list(image.shape)}")
    if image.shape[0] * image.shape[1] > limits.max_image_pixels:
        raise InvalidRequest(f"{field}.shape", f"image exceeds the limit of {limits.max_image_pixels} pixels")
    if image.dtype != np.uint8:
        if not np.isfinite(image).all():
            raise InvalidRequest(f"{field}.data", "contains NaN or infinite values")
        if image.min() < 0.0 or image.max() > 1.0:
            raise InvalidRequest(f"{field}.data", "float32 pixels must lie in [0, 1]")
    return image


def decode_audio_bytes(field: str, data: bytes, limits: DecodeLimits) -> tuple[np.ndarray, int]:
    """A WAV/FLAC file -> (mono float32 waveform ``(N,)``, sample rate)."""
    import soundfile

    try:
        info = soundfile.info(io.BytesIO(data))
        if info.duration > limits.max_audio_seconds:
            raise InvalidRequest(
                field, f"recording of {info.duration:.1f} s exceeds the limit of {limits.max_audio_seconds:g} s"
            )
        wave, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except InvalidRequest:
        raise
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError) as exc:
        raise InvalidRequest(field, f"cannot decode audio (WAV or FLAC expected): {type(exc).__name__}") from None
    mono = np.ascontiguousarray(wave.mean(axis=1), dtype=np.float32)  # (N,)
    return check_audio(field, mono, int(rate), limits), int(rate)


def check_audio(field: str, wave: np.ndarray, rate: int, limits: DecodeLimits) -> np.ndarray:
    if wave.ndim != 1:
        raise InvalidRequest(f"{field}.shape", f"expected a mono waveform (N,), got {list(wave.shape)}")
    if not limits.min_sample_rate <= rate <= limits.max_sample_rate:
        raise InvalidRequest(
            f"{field}.sample_rate",
            f"must be in [{limits.min_sample_rate}, {limits.max_sample_rate}] Hz, got {rate}",
        )
    if wave.shape[0] == 0:
        raise InvalidRequest(field, "the recording has no samples")
    if wave.shape[0] > limits.max_audio_seconds * rate:
        raise InvalidRequest(field, f"recording exceeds the limit of {limits.max_audio_seconds:g} s")
    if wave.dtype != np.float32:
        raise InvalidRequest(f"{field}.dtype", "audio tensors must be DTYPE_FLOAT32")
    if not np.isfinite(wave).all():
        raise InvalidRequest(f"{field}.data", "contains NaN or infinite values")
    if np.abs(wave).max() > 1.0 + 1e-6:
        raise InvalidRequest(f"{field}.data", "samples must lie in [-1, 1]")
    if wave.shape[0] < limits.min_audio_seconds * rate:
        raise InvalidRequest(field, f"the recording lasts {1000 * wave.shape[0] / rate:.0f} ms, shorter than "
                             f"{1000 * limits.min_audio_seconds:.0f} ms (limits.min_audio_seconds; a cut file?)")
    return wave


def decode_sample(field: str, msg: "mcil_pb2.Sample", limits: DecodeLimits) -> "Sample":
    """One ``mcil.v1.Sample`` -> :class:`model.samples.Sample` (image and/or audio, never neither)."""
    from model.samples import Sample

    image, audio, rate = _decode_parts(field, msg, limits)
    return Sample(image=image, audio=audio, sample_rate=rate)


@dataclass(frozen=True)
class RawInput:
    """A decoded picture and/or sound, without the model's types (the serving process imports no PyTorch)."""

    image: np.ndarray | None
    audio: np.ndarray | None
    sample_rate: int | None


def decode_raw(field: str, msg: "mcil_pb2.Sample", limits: DecodeLimits) -> RawInput:
    """One ``mcil.v1.Sample`` -> :class:`RawInput` (image and/or audio, never neither)."""
    return RawInput(*_decode_parts(field, msg, limits))


def decode_labeled(field: str, label: str, msg: "mcil_pb2.Sample", limits: DecodeLimits) -> "LabeledSample":
    from model.samples import LabeledSample

    image, audio, rate = _decode_parts(field, msg, limits)
    return LabeledSample(image=image, audio=audio, sample_rate=rate, label=label)


def _decode_parts(
    field: str, msg: "mcil_pb2.Sample", limits: DecodeLimits
) -> tuple[np.ndarray | None, np.ndarray | None, int | None]:
    image: np.ndarray | None = None
    audio: np.ndarray | None = None
    rate: int | None = None
    which_image = msg.WhichOneof("image")
    if which_image == "image_bytes":
        image = decode_image_bytes(f"{field}.image_bytes", msg.image_bytes, limits)
    elif which_image == "image_tensor":
        image = check_image(f"{field}.image_tensor", _tensor(f"{field}.image_tensor", msg.image_tensor), limits)
    which_audio = msg.WhichOneof("audio")
    if which_audio == "audio_bytes":
        audio, rate = decode_audio_bytes(f"{field}.audio_bytes", msg.audio_bytes, limits)
    elif which_audio == "audio_tensor":
        t = msg.audio_tensor
        rate = int(t.sample_rate)
        audio = check_audio(f"{field}.audio_tensor", _tensor(f"{field}.audio_tensor", t), rate, limits)
    if image is None and audio is None:
        raise InvalidRequest(field, "a sample needs an image, a sound, or both")
    return image, audio, rate


def encode_prediction(pred: "Prediction", out: "mcil_pb2.Classification") -> None:
    """Fill ``out`` from a model prediction."""
    for name, score in zip(pred.classes, pred.scores):
        entry = out.classes.add()
        entry.name = name
        entry.score = float(score)
    out.path = PATH_TO_PROTO.get(pred.path, 0)  # type: ignore[assignment]
    out.unknown = pred.unknown


def image_tensor(image: np.ndarray, out: "mcil_pb2.Tensor") -> None:
    """Encode a decoded image array as a raw tensor (client side)."""
    arr = np.ascontiguousarray(image)
    if arr.dtype != np.uint8:
        arr = arr.astype("<f4")
    out.shape.extend(int(d) for d in arr.shape)
    out.dtype = 1 if arr.dtype == np.uint8 else 2  # type: ignore[assignment]
    out.data = arr.tobytes()


def audio_tensor(wave: np.ndarray, sample_rate: int, out: "mcil_pb2.Tensor") -> None:
    """Encode a mono float waveform as a raw tensor (client side)."""
    arr = np.ascontiguousarray(wave, dtype="<f4")
    out.shape.append(int(arr.shape[0]))
    out.dtype = 2  # type: ignore[assignment]
    out.data = arr.tobytes()
    out.sample_rate = int(sample_rate)
