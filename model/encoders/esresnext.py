"""AudioCLIP's audio encoder, ESResNeXt-fbsp: a learned spectrogram front end and a ResNeXt trunk.

The encoder is frozen in this product; what matters is that it computes what AudioCLIP's trained
audio head computes, so that AudioCLIP's published weights (the ``audio.*`` tensors of its full
checkpoint) load into it strictly and give the same features. Tensor names follow that checkpoint::

    window                      (win_length,)        analysis window (a buffer)
    fbsp.m, fbsp.fb, fbsp.fc    (F,)                 the learned transform, F = n_fft // 2 + 1
    fbsp.bias                   (0,)                 empty: AudioCLIP builds the transform without bias
    conv1, bn1                                       stem
    layer1 .. layer4                                 ResNeXt stages of bottleneck blocks
    att1 .. att5                                     attention branches (when ``attention``)
    fc                                               pooled trunk feature -> output_dim

Forward, for a batch of mono waveforms ``(B, S)`` with samples in [-1, 1]::

    x      = rescale(waveform)                       AudioCLIP's input convention (int16 range -> [-1, 1])
    frames = window * frame(x, win_length, hop)      (B, T, win_length), zero-padded at both ends
    spec   = frames @ K(m, fb, fc).T                 (B, T, F) complex: the fbsp transform
                                                     (computed as one strided convolution)
    power  = 10 log10 |spec|^2                       (B, 3, F // 3, T): three stacked frequency bands
    feat   = trunk(power)                            (B, 4 * 8 * base_width)
    out    = fc(feat)                                (B, output_dim)

The three frequency bands play the role of an image's three colour channels (the trunk started
from ImageNet weights): the lowest ``3 * (F // 3)`` bins are split into three equal bands.

The fbsp transform (Guzhov et al., "ESResNe(X)t-fbsp", 2021) is a bank of ``F`` complex filters over
``n_fft`` samples, each a carrier ``exp(-i fc t)`` under a learned envelope
``sqrt(fb) * sinc(fb t / m) ** m`` (a frequency B-spline of order ``m``), ``t`` spanning
``[-pi, pi]``. Its kernel is a pure function of the three parameter vectors; :meth:`LinearFBSP.kernel`
materialises it. torchaudio's fixed STFT cannot express this learned kernel, so the front end is
written out here; resampling to the encoder's rate happens before (:mod:`model.audio`).

Every op is exportable: the front end is one strided ``conv1d`` whose filters are a function of the
frozen parameters, and the attention branches pool with :func:`adaptive_max_pool2d` (gathers over
fixed index tables), so ``torch.onnx.export(..., dynamo=True)`` handles the whole encoder with a
free batch dimension.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from model.config import AudioEncoderConfig
from model.errors import InvalidInputError

N_BANDS = 3
"""Frequency bands stacked as input channels of the trunk (the ImageNet stem takes 3 channels)."""

_EPS = 1e-8
_LOG_FLOOR = 1e-18  # power values that are not > 0 are replaced by this before the log
_BOTTLENECK_EXPANSION = 4


def analysis_window(name: str, length: int) -> torch.Tensor:
    """A periodic analysis window of ``length`` samples (scipy's ``get_window(..., fftbins=True)``)."""
    n = torch.arange(length, dtype=torch.float64) * (2.0 * math.pi / length)
    if name == "blackmanharris":
        w = 0.35875 - 0.48829 * torch.cos(n) + 0.14128 * torch.cos(2 * n) - 0.01168 * torch.cos(3 * n)
    elif name == "hann":
        w = 0.5 - 0.5 * torch.cos(n)
    elif name == "boxcar":
        w = torch.ones(length, dtype=torch.float64)
    else:
        raise ValueError(f"window: unknown window {name!r}")
    return w.to(torch.get_default_dtype())


class LinearFBSP(nn.Module):
    """The learned frequency-B-spline transform: ``F`` complex filters, each over ``n_fft`` samples.

    Parameters (``F`` = number of filters = frequency bins):
        m:  B-spline order of each filter's envelope (0 at initialisation: a flat envelope).
        fb: bandwidth of each envelope.
        fc: centre frequency of each carrier (0, 1, ..., F - 1 at initialisation: a DFT).
        bias: kept as an empty tensor for checkpoint compatibility; this transform has no bias.
    """

    def __init__(self, n_filters: int, normalized: bool = True) -> None:
        super().__init__()
        self.n_filters = n_filters
        self.normalized = normalized
        self.m = nn.Parameter(torch.zeros(n_filters))
        self.fb = nn.Parameter(torch.ones(n_filters))
        self.fc = nn.Parameter(torch.arange(n_filters, dtype=torch.get_default_dtype()))
        self.bias = nn.Parameter(torch.empty(0))

    def kernel(self, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Real and imaginary parts of the filter bank, each ``(F, n_samples)``."""
        t = math.pi * torch.linspace(-1.0, 1.0, n_samples, dtype=self.m.dtype, device=self.m.device) + _EPS
        t = t[None, :]  # (1, N)
        m, fb, fc = self.m[:, None], self.fb[:, None], self.fc[:, None]  # (F, 1) each

        # Envelope: sinc(fb t / m) raised to the (real) power m. A negative base has phase pi, so
        # its power has phase pi * m: envelope = |s|^m * exp(i pi m [s < 0]).
        arg = fb * t / (m + _EPS)  # (F, N)
        s = torch.where(arg == 0, torch.ones_like(arg), torch.sin(arg) / arg)
        magnitude = torch.pow(s * s, 0.5 * m)
        phase = math.pi * m * (s < 0).to(s.dtype)
        env_re, env_im = magnitude * torch.cos(phase), magnitude * torch.sin(phase)

        # Carrier exp(-i fc t), envelope times carrier, scaled by sqrt(fb).
        car_re, car_im = torch.cos(fc * t), -torch.sin(fc * t)
        scale = fb.sqrt()
        k_re = scale * (env_re * car_re - env_im * car_im)
        k_im = scale * (env_re * car_im + env_im * car_re)
        if self.normalized:
            k_re, k_im = k_re / math.sqrt(n_samples), k_im / math.sqrt(n_samples)
        return k_re, k_im  # (F, N) each

    def extra_repr(self) -> str:
        return f"n_filters={self.n_filters}, normalized={self.normalized}"


def adaptive_max_pool2d(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_max_pool2d`` written with gathers over fixed index tables.

    Same windows and result as PyTorch's (window ``i`` of ``n -> out`` spans
    ``[floor(i n / out), ceil((i + 1) n / out))``), but made of ops that ONNX and TensorRT export
    for any sizes, which the built-in only does when ``out`` divides ``n``.
    """
    for dim, out in ((2, int(size[0])), (3, int(size[1]))):
        x = _adaptive_max_1d(x, dim, out)
    return x


def _adaptive_max_1d(x: torch.Tensor, dim: int, out: int) -> torch.Tensor:
    n = x.shape[dim]
    if n == out:
        return x
    starts = [(i * n) // out for i in range(out)]
    ends = [-((-(i + 1) * n) // out) for i in range(out)]
    k = max(e - s for s, e in zip(starts, ends))
    # Each window's indices, padded by repeating its last index (a repeat does not change a max).
    table = [[min(s + j, e - 1) for j in range(k)] for s, e in zip(starts, ends)]
    index = torch.tensor(table, dtype=torch.long, device=x.device).flatten()  # (out * k,)
    gathered = x.index_select(dim, index)  # window after window along ``dim``
    shape = [-1, *x.shape[1:]]  # -1: the batch size stays free when exported
    shape[dim : dim + 1] = [out, k]
    return gathered.reshape(shape).amax(dim=dim + 1)


class Attention2d(nn.Module):
    """A sigmoid gate computed from a stage's input, multiplied onto the stage's output.

    ``gate = sigmoid(bn(pointwise(depthwise(adaptive_max_pool(x, size)))))``; ``size`` is the spatial
    size of the stage output, so the gate matches it.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int]) -> None:
        super().__init__()
        padding = (kernel_size[0] // 2, kernel_size[1] // 2)
        self.conv_depth = nn.Conv2d(
            in_channels, in_channels, kernel_size, padding=padding, groups=in_channels
        )
        self.conv_point = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = adaptive_max_pool2d(x, size)  # (B, C_in, h, w)
        return torch.sigmoid(self.bn(self.conv_point(self.conv_depth(x))))  # (B, C_out, h, w)


class Bottleneck(nn.Module):
    """ResNeXt bottleneck: 1x1 reduce, grouped 3x3 (carries the stride), 1x1 expand, residual."""

    def __init__(self, in_channels: int, planes: int, width: int, groups: int, stride: int) -> None:
        super().__init__()
        out_channels = planes * _BOTTLENECK_EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        result: torch.Tensor = self.relu(out + identity)
        return result


# Kernel sizes of the attention branches after stages 1-4 and after pooling (AudioCLIP's choice:
# alternately along frequency and along time).
_ATTENTION_KERNELS = ((3, 1), (1, 5), (3, 1), (1, 5), (3, 5))


class ESResNeXtFBSP(nn.Module):
    """Mono waveforms ``(B, clip_samples)`` at ``config.sample_rate`` -> features ``(B, output_dim)``.

    Stage ``i`` (0-based) has ``base_width * 2**i`` planes, outputs four times that many channels,
    and its grouped convolutions are ``groups * width_per_group * 2**i`` channels wide. With the
    defaults (64, 32, 4) this is ResNeXt-50 32x4d, as in AudioCLIP.
    """

    window: torch.Tensor  # (win_length,) analysis window, a buffer

    def __init__(self, config: AudioEncoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.n_filters = c.n_fft // 2 + 1
        self.register_buffer("window", analysis_window(c.window, c.win_length))
        self.fbsp = LinearFBSP(self.n_filters, normalized=True)

        self.conv1 = nn.Conv2d(N_BANDS, c.base_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c.base_width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        in_channels = c.base_width
        stage_inputs = []
        for i, n_blocks in enumerate(c.layers):
            planes = c.base_width * 2**i
            width = c.groups * c.width_per_group * 2**i
            blocks = []
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(Bottleneck(in_channels, planes, width, c.groups, stride))
                if j == 0:
                    stage_inputs.append(in_channels)
                in_channels = planes * _BOTTLENECK_EXPANSION
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.feature_dim = in_channels

        if c.attention:
            stage_outputs = [c.base_width * 2**i * _BOTTLENECK_EXPANSION for i in range(4)]
            pairs = list(zip(stage_inputs, stage_outputs)) + [(self.feature_dim, self.feature_dim)]
            for k, ((cin, cout), kernel) in enumerate(zip(pairs, _ATTENTION_KERNELS), start=1):
                self.add_module(f"att{k}", Attention2d(cin, cout, kernel))

        self.fc = nn.Linear(self.feature_dim, c.output_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        # As AudioCLIP's trunk before training: He init for convolutions, unit batch norms.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    # -- front end --------------------------------------------------------------------------------
    def frame_padding(self, n_samples: int) -> tuple[int, int]:
        """Zeros added before and after a signal of ``n_samples`` so that frames tile it exactly.

        There are ``T = 1 + ceil((S - win) / hop)`` frames; the signal is padded (half before, half
        after) so that the last frame ends at the padded end, as AudioCLIP frames it.
        """
        win, hop = self.config.win_length, self.config.hop_length
        n_frames = 1 if n_samples <= win else 1 + math.ceil((n_samples - win) / hop)
        pad = max((n_frames - 1) * hop + win - n_samples, 0)
        return pad // 2, pad - pad // 2

    def analysis_filters(self) -> torch.Tensor:
        """The front end as convolution filters ``(2F, 1, win_length)``: real parts, then imaginary.

        A frame is zero-padded from ``win_length`` to ``n_fft`` samples (centred) before the
        ``n_fft``-point transform; the padding multiplies zeros, so only the kernel's middle
        ``win_length`` columns matter, and the window is folded into them.
        """
        k_re, k_im = self.fbsp.kernel(self.config.n_fft)  # (F, n_fft) each
        left = (self.config.n_fft - self.config.win_length) // 2
        cols = slice(left, left + self.config.win_length)
        filters = torch.cat([k_re[:, cols], k_im[:, cols]]) * self.window  # (2F, win)
        return filters[:, None, :]  # (2F, 1, win)

    def log_power_spectrogram(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` waveforms in [-1, 1] -> ``(B, 3, F // 3, T)`` power in dB."""
        # AudioCLIP was trained on int16-range samples mapped linearly from [-32768, 32767] to [-1, 1].
        x = (waveforms * 32768.0 + 32768.0) * (2.0 / 65535.0) - 1.0  # (B, S)
        x = F.pad(x, self.frame_padding(x.shape[-1]))  # (B, S')
        # Framing, windowing and the transform in one strided convolution (an STFT, learned filters).
        spec = F.conv1d(x[:, None, :], self.analysis_filters(), stride=self.config.hop_length)  # (B, 2F, T)
        re, im = spec[:, : self.n_filters], spec[:, self.n_filters :]  # (B, F, T) each
        power = re * re + im * im  # (B, F, T)

        per_band = self.n_filters // N_BANDS
        power = power[:, : N_BANDS * per_band].reshape(power.shape[0], N_BANDS, per_band, power.shape[-1])
        power = torch.where(power > 0.0, power, torch.full_like(power, _LOG_FLOOR))
        return 10.0 * torch.log10(power)  # (B, 3, F // 3, T)

    # -- trunk ------------------------------------------------------------------------------------
    def trunk(self, spec: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> pooled features ``(B, feature_dim)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(spec))))  # (B, base, H/4, W/4)
        for i in range(1, 5):
            layer = getattr(self, f"layer{i}")
            if self.config.attention:
                gate_input = x
                x = layer(x)
                x = x * getattr(self, f"att{i}")(gate_input, x.shape[-2:])
            else:
                x = layer(x)
        pooled = F.adaptive_avg_pool2d(x, 1)  # (B, C, 1, 1)
        if self.config.attention:
            pooled = pooled * cast(Attention2d, self.att5)(x, pooled.shape[-2:])
        return pooled.flatten(1)  # (B, C)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        if waveforms.dim() != 2:
            raise InvalidInputError(
                "waveforms", f"expected shape (batch, samples), got {tuple(waveforms.shape)}"
            )
        if waveforms.shape[-1] < self.config.win_length:
            raise InvalidInputError(
                "waveforms",
                f"{waveforms.shape[-1]} samples is shorter than one frame ({self.config.win_length})",
            )
        x = waveforms.to(self.fc.weight.dtype)
        features: torch.Tensor = self.fc(self.trunk(self.log_power_spectrogram(x)))  # (B, output_dim)
        return features
