"""Google's speech embedding model (as shipped in ``openwakeword==0.4.0``), a frozen audio encoder.

Two ONNX files from the package's ``resources/models`` run on ONNX Runtime (CPU):

- ``melspectrogram.onnx``: input ``input`` ``(1, samples)``, float32 samples at 16 kHz on the 16-bit
  PCM scale ([-32768, 32767]); output ``output`` ``(1, 1, frames, 32)``: 32 log-mel bins every 10 ms
  (512-sample window, 160-sample hop, no padding: ``frames = (samples - 512) // 160 + 1``). The graph
  clips the log-mel values to 80 dB below the maximum of the *whole input tensor*, so clips are run
  one at a time: batched together they would change each other's floor.
- ``embedding_model.onnx``: input ``input_1`` ``(N, 76, 32, 1)``, windows of 76 frames (0.775 s);
  output ``conv2d_19`` ``(N, 1, 1, 96)``.

Between the two, openWakeWord applies ``mel / 10 + 2`` (its ``AudioFeatures`` front end: it brings
the ONNX spectrogram close to the TensorFlow original's scale), and slides the 76-frame window by 8
frames (80 ms). We do the same, then pool the per-window embeddings of each clip into one vector:
``concat(mean, max)`` -> 192-d.

Windows are computed over the recording, not the padding: the zero padding that fits a short
recording to the clip length (see :func:`model.audio.fit_length`) is found as the run of exact zeros
at the end, and windows starting inside it are neither computed nor pooled (the first window is always
kept). Each clip's spectrogram is run only over the samples its kept windows cover (at least
``MIN_SAMPLES``; the whole clip when signal reaches past its last window's samples); as padding zeros
never raise the spectrogram's -80 dB floor, the kept windows' frames are those of the whole clip. The
embedding model runs over each clip's whole spectrogram at once (``serving/speech_graph.py``: the
network is a valid convolution along time with stride 8, so this gives every window's embedding,
computing shared frames once), clips of a call together, ``FRAMES_PER_RUN`` frames at a time. A 0.4 s
spoken digit therefore costs about 5 windows instead of the 22 of a 2.5 s clip, and gets
the same feature from any clip long enough to hold its windows (its length + 0.78 s), instead of one
diluted by silence windows.

The module has no parameters; it takes ``(B, S)`` float waveforms in [-1, 1] at 16 kHz and returns
``(B, 192)`` on the input's device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from serving.speech import (  # the constants and helpers are this module's public names too (__all__)
    EMBEDDING_DIM,
    FFT_WINDOW,
    FRAMES_PER_RUN,
    HOP,
    MIN_SAMPLES,
    PCM_SCALE,
    POOLED_DIM,
    SAMPLE_RATE,
    SpeechWindows,
    n_frames,
    n_windows,
    package_model_dir,
    samples_needed,
    signal_ends,
    windows_with_signal,
)
from serving.speech_graph import MEL_BINS, WINDOW_FRAMES, WINDOW_STEP  # the embedding graph's window geometry

__all__ = ["EMBEDDING_DIM", "FFT_WINDOW", "FRAMES_PER_RUN", "HOP", "MEL_BINS", "MIN_SAMPLES", "PCM_SCALE", "POOLED_DIM", "SAMPLE_RATE",
           "WINDOW_FRAMES", "WINDOW_STEP", "SpeechEmbedding", "n_frames", "n_windows",
           "package_model_dir", "samples_needed", "signal_ends", "windows_with_signal"]


class SpeechEmbedding(nn.Module):
    """Frozen ``(B, S)`` 16 kHz waveforms -> ``(B, 192)`` pooled speech embeddings, via ONNX Runtime
    (``serving/speech.py`` computes them; this module hands it the waveforms and takes back a tensor).

    Args:
        model_dir: folder holding ``melspectrogram.onnx`` and ``embedding_model.onnx`` (default: the
            installed openwakeword package's).
        threads: ONNX Runtime intra-op threads (default: PyTorch's current thread count, so the audio
            encoder uses the same CPU budget as the rest of the model). Threads sleep when idle
            instead of spinning, so they do not steal cores from PyTorch between calls.
    """

    def __init__(self, model_dir: Path | None = None, threads: int | None = None) -> None:
        super().__init__()
        model_dir = package_model_dir() if model_dir is None else Path(model_dir)
        self.melspectrogram_path = model_dir / "melspectrogram.onnx"
        self.embedding_path = model_dir / "embedding_model.onnx"
        self.onnx_files = (self.melspectrogram_path, self.embedding_path)  # what export/ copies, not re-exports
        self.threads = threads if threads is not None else max(1, torch.get_num_threads())
        if self.threads < 1:
            raise ValueError(f"threads: must be >= 1, got {self.threads}")
        self.windows = SpeechWindows.from_files(model_dir, self.threads)

    @property
    def output_dim(self) -> int:
        return POOLED_DIM

    def __deepcopy__(self, memo: dict[int, object]) -> "SpeechEmbedding":
        # Stateless and frozen: copies share the ONNX Runtime sessions.
        return self

    def train(self, mode: bool = True) -> "SpeechEmbedding":
        return super().train(False)

    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        """One clip ``(S,)`` in [-1, 1] -> ``(frames, 32)``, on openWakeWord's scale."""
        return self.windows.log_mel(wave)

    @torch.no_grad()
    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        if waveforms.dim() != 2:
            raise ValueError(f"waveforms: expected (B, S), got shape {tuple(waveforms.shape)}")
        pooled = self.windows.embed(waveforms.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(pooled).to(waveforms.device)  # (B, 192)

    signal_ends = staticmethod(signal_ends)
