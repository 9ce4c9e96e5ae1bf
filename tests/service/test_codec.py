"""Request decoding: image files, WAV/FLAC, raw tensors; every bad input names its field."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
from PIL import Image

from service._proto import mcil_pb2
from service.client import sample_from_arrays
from service.codec import DecodeLimits, decode_sample
from service.errors import InvalidRequest

LIMITS = DecodeLimits(max_image_pixels=512 * 512, max_audio_seconds=5.0)


def _image_bytes(fmt: str, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def _audio_bytes(fmt: str, channels: int = 1, rate: int = 16000, seconds: float = 0.25) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.5 * np.sin(2 * np.pi * 440 * t)
    data = np.stack([wave] * channels, axis=1)
    buf = io.BytesIO()
    soundfile.write(buf, data, rate, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "RGB"), ("JPEG", "RGB"), ("PNG", "L"), ("PNG", "RGBA"),
                                           ("BMP", "RGB"), ("GIF", "P")])
def test_image_files_become_rgb_uint8(fmt: str, mode: str) -> None:
    sample = decode_sample("s", mcil_pb2.Sample(image_bytes=_image_bytes(fmt, mode)), LIMITS)
    assert sample.image is not None and sample.image.shape == (20, 30, 3) and sample.image.dtype == np.uint8
    assert sample.audio is None


@pytest.mark.parametrize(("fmt", "channels"), [("WAV", 1), ("WAV", 2), ("FLAC", 1)])
def test_audio_files_become_mono_float32(fmt: str, channels: int) -> None:
    sample = decode_sample("s", mcil_pb2.Sample(audio_bytes=_audio_bytes(fmt, channels)), LIMITS)
    assert sample.audio is not None and sample.audio.shape == (4000,) and sample.audio.dtype == np.float32
    assert sample.sample_rate == 16000 and sample.image is None
    assert 0.45 < float(np.abs(sample.audio).max()) <= 0.51


def test_raw_tensors_round_trip() -> None:
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    wave = np.linspace(-1, 1, 9000, dtype=np.float32)
    sample = decode_sample("s", sample_from_arrays(image, wave, 9000), LIMITS)
    assert np.array_equal(sample.image, image) and np.array_equal(sample.audio, wave)
    assert sample.sample_rate == 9000
    assert sample.image is not None and sample.image.flags.writeable


def _tensor(shape: list[int], dtype: int, data: bytes, rate: int = 0) -> mcil_pb2.Tensor:
    return mcil_pb2.Tensor(shape=shape, dtype=dtype, data=data, sample_rate=rate)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sample", "field"),
    [
        (mcil_pb2.Sample(), "s"),
        (mcil_pb2.Sample(image_bytes=b"not an image"), "s.image_bytes"),
        (mcil_pb2.Sample(audio_bytes=b"RIFF....WAVEfmt "), "s.audio_bytes"),
        (mcil_pb2.Sample(image_tensor=_tensor([2, 2, 3], 1, b"\0" * 11)), "s.image_tensor.data"),
        (mcil_pb2.Sample(image_tensor=_tensor([2, 2, 2], 1, b"\0" * 8)), "s.image_tensor.shape"),
        (mcil_pb2.Sample(image_tensor=_tensor([2, 2], 0, b"\0" * 4)), "s.image_tensor.dtype"),
        (mcil_pb2.Sample(image_tensor=_tensor([1, 1], 2, np.array([np.nan], "<f4").tobytes())),
         "s.image_tensor.data"),
        (mcil_pb2.Sample(image_tensor=_tensor([1, 1], 2, np.array([2.0], "<f4").tobytes())), "s.image_tensor.data"),
        (mcil_pb2.Sample(audio_tensor=_tensor([4], 2, np.zeros(4, "<f4").tobytes(), rate=0)),
         "s.audio_tensor.sample_rate"),
        (mcil_pb2.Sample(audio_tensor=_tensor([4], 2, np.array([0, np.inf, 0, 0], "<f4").tobytes(), 16000)),
         "s.audio_tensor.data"),
        (mcil_pb2.Sample(audio_tensor=_tensor([2, 2], 2, np.zeros(4, "<f4").tobytes(), 16000)),
         "s.audio_tensor.shape"),
        (mcil_pb2.Sample(audio_tensor=_tensor([4], 1, b"\0" * 4, 16000)), "s.audio_tensor.dtype"),
    ],
)
def test_bad_samples_name_the_field(sample: mcil_pb2.Sample, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        decode_sample("s", sample, LIMITS)
    assert info.value.field == field


def test_limits_protect_memory() -> None:
    big = io.BytesIO()
    Image.new("RGB", (600, 600)).save(big, format="PNG")
    with pytest.raises(InvalidRequest, match="exceeds the limit"):
        decode_sample("s", mcil_pb2.Sample(image_bytes=big.getvalue()), LIMITS)
    with pytest.raises(InvalidRequest, match="exceeds the limit"):
        decode_sample("s", mcil_pb2.Sample(audio_bytes=_audio_bytes("WAV", seconds=6.0)), LIMITS)


def _png_header(width: int, height: int) -> bytes:
    """A 57-byte PNG that declares ``width x height`` and holds no pixel."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def _wav(frames: int) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, np.zeros(frames, np.float32), 16000, format="WAV")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("sample", "field", "problem"),
    [
        (mcil_pb2.Sample(image_bytes=_png_header(20000, 20000)), "s.image_bytes", "declares more than the limit"),
        (mcil_pb2.Sample(image_bytes=_png_header(600, 600)), "s.image_bytes", "exceeds the limit"),
        (mcil_pb2.Sample(audio_bytes=_wav(0)), "s.audio_bytes", "no samples"),
        (mcil_pb2.Sample(image_tensor=_tensor([1] * 65, 1, b"\0")), "s.image_tensor.shape", "at most 4 dimensions"),
        (mcil_pb2.Sample(audio_tensor=_tensor([1] * 65, 2, b"\0" * 4, 16000)), "s.audio_tensor.shape",
         "at most 4 dimensions"),
    ],
)
def test_hostile_headers_are_refused_before_decoding(sample: mcil_pb2.Sample, field: str, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem) as info:
        decode_sample("s", sample, LIMITS)
    assert info.value.field == field


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_large_images_are_reduced_while_decoding_and_the_model_sees_the_same_input(fmt: str) -> None:
    from model.images import prepare_images

    side = 2048
    yy, xx = np.mgrid[0:side, 0:side]
    arr = np.stack([(xx * 255 // side), (yy * 255 // side), ((xx + yy) * 255 // (2 * side))], axis=2).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    limits = DecodeLimits(max_image_pixels=side * side, decode_side=512)
    sample = decode_sample("s", mcil_pb2.Sample(image_bytes=buf.getvalue()), limits)
    assert sample.image is not None and sample.image.shape == (512, 512, 3)  # 4x fewer pixels per side
    direct = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    ours = prepare_images([sample.image], 160, [0.0] * 3, [1.0] * 3)
    full = prepare_images([direct], 160, [0.0] * 3, [1.0] * 3)
    assert float((ours - full).abs().max()) < 0.02  # of a [0, 1] range: what the model sees barely moves
