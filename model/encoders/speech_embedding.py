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
kept windows of all clips of a call go through the embedding model together, ``WINDOWS_PER_RUN`` at a
time. A 0.4 s spoken digit therefore costs about 5 windows instead of the 22 of a 2.5 s clip, and gets
the same feature from any clip long enough to hold its windows (its length + 0.78 s), instead of one
diluted by silence windows.

The module has no parameters; it takes ``(B, S)`` float waveforms in [-1, 1] at 16 kHz and returns
``(B, 192)`` on the input's device.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

SAMPLE_RATE = 16000
MEL_BINS = 32
WINDOW_FRAMES = 76
WINDOW_STEP = 8
FFT_WINDOW = 512
HOP = 160
EMBEDDING_DIM = 96
POOLED_DIM = 2 * EMBEDDING_DIM
PCM_SCALE = 32767.0  # openWakeWord feeds 16-bit PCM values as floats
WINDOWS_PER_RUN = 64  # embedding windows per ONNX Runtime call: bounds its memory arena (~100 MB)
MIN_SAMPLES = FFT_WINDOW + (WINDOW_FRAMES - 1) * HOP  # 12,512 samples (0.78 s): one full window


def package_model_dir() -> Path:
    """``resources/models`` inside the installed ``openwakeword`` package (imported lazily)."""
    import openwakeword

    return Path(openwakeword.__file__).resolve().parent / "resources" / "models"


def n_frames(samples: int) -> int:
    return (samples - FFT_WINDOW) // HOP + 1


def n_windows(samples: int) -> int:
    """Embedding windows for a clip of ``samples`` samples (windows running past the end are dropped)."""
    return (n_frames(samples) - WINDOW_FRAMES) // WINDOW_STEP + 1


class SpeechEmbedding(nn.Module):
    """Frozen ``(B, S)`` 16 kHz waveforms -> ``(B, 192)`` pooled speech embeddings, via ONNX Runtime.

    Args:
        model_dir: folder holding ``melspectrogram.onnx`` and ``embedding_model.onnx`` (default: the
            installed openwakeword package's).
        threads: ONNX Runtime intra-op threads (default: PyTorch's current thread count, so the audio
            encoder uses the same CPU budget as the rest of the model). Threads sleep when idle
            instead of spinning, so they do not steal cores from PyTorch between calls.
    """

    def __init__(self, model_dir: Path | None = None, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        model_dir = package_model_dir() if model_dir is None else Path(model_dir)
        self.melspectrogram_path = model_dir / "melspectrogram.onnx"
        self.embedding_path = model_dir / "embedding_model.onnx"
        self.onnx_files = (self.melspectrogram_path, self.embedding_path)  # what export/ copies, not re-exports
        for path in (self.melspectrogram_path, self.embedding_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: speech embedding model file not found (is openwakeword installed?)")
        self.threads = threads if threads is not None else max(1, torch.get_num_threads())
        if self.threads < 1:
            raise ValueError(f"threads: must be >= 1, got {self.threads}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        self._melspectrogram = ort.InferenceSession(os.fspath(self.melspectrogram_path), options, providers=providers)
        self._embedding = ort.InferenceSession(os.fspath(self.embedding_path), options, providers=providers)
        self._mel_input = self._melspectrogram.get_inputs()[0].name  # "input"
        self._embedding_input = self._embedding.get_inputs()[0].name  # "input_1"

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
        pcm = (wave * PCM_SCALE).astype(np.float32)[None]  # (1, S)
        mel: np.ndarray = self._melspectrogram.run(None, {self._mel_input: pcm})[0]  # (1, 1, frames, 32)
        scaled: np.ndarray = mel[0, 0] / 10.0 + 2.0  # (frames, 32)
        return scaled

    @torch.no_grad()
    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        if waveforms.dim() != 2:
            raise ValueError(f"waveforms: expected (B, S), got shape {tuple(waveforms.shape)}")
        if waveforms.shape[1] < MIN_SAMPLES:
            raise ValueError(f"waveforms: need at least {MIN_SAMPLES} samples at 16 kHz, got {waveforms.shape[1]}")
        waves = waveforms.detach().to("cpu", torch.float32).numpy()
        keep = self._windows_with_signal(waves, n_windows(waves.shape[1]))  # (B, W)
        ends = self.signal_ends(waves)  # (B,)
        windows: list[np.ndarray] = []  # (76, 32) each
        counts: list[int] = []  # kept windows per clip
        for wave, row, end in zip(waves, keep, ends):
            kept = np.flatnonzero(row)  # (K,) window indices, in order
            mel = self.log_mel(wave[: self._samples_needed(int(kept[-1]), int(end), len(wave))])  # (frames, 32)
            windows.extend(mel[s : s + WINDOW_FRAMES] for s in kept * WINDOW_STEP)
            counts.append(len(kept))
        flat = np.stack(windows)[..., None]  # (N, 76, 32, 1): every clip's kept windows
        chunks = np.concatenate([  # (N, 1, 1, 96), in chunks: ONNX Runtime keeps its peak memory
            self._embedding.run(None, {self._embedding_input: flat[i : i + WINDOWS_PER_RUN]})[0]
            for i in range(0, len(flat), WINDOWS_PER_RUN)
        ])
        emb = torch.from_numpy(chunks.reshape(len(flat), EMBEDDING_DIM))  # (N, 96)
        pooled = [torch.cat([e.mean(0), e.amax(0)]) for e in torch.split(emb, counts)]  # B x (192,)
        return torch.stack(pooled).to(waveforms.device)  # (B, 192)

    @staticmethod
    def _samples_needed(last_window: int, signal_end: int, samples: int) -> int:
        """How much of a clip the spectrogram must see for windows ``0..last_window`` to come out as
        from the whole clip: up to the end of ``last_window``, unless a spectrogram frame past that
        still holds signal (it could raise the graph's -80 dB floor; with the windows of
        :meth:`_windows_with_signal`, only when ``last_window`` is the clip's last window): then the whole
        clip. Frames of padding zeros never raise the floor."""
        needed = last_window * WINDOW_STEP * HOP + MIN_SAMPLES
        return needed if signal_end <= n_frames(needed) * HOP else samples

    @staticmethod
    def signal_ends(waves: np.ndarray) -> np.ndarray:
        """``(B,)`` int: where the trailing run of exact zeros (the padding) starts; 0 for silence."""
        nonzero = waves != 0
        ends: np.ndarray = np.where(nonzero.any(1), waves.shape[1] - np.argmax(nonzero[:, ::-1], axis=1), 0)
        return ends

    @classmethod
    def _windows_with_signal(cls, waves: np.ndarray, windows: int) -> np.ndarray:
        """``(B, W)`` bool: window ``w`` starts before the trailing run of exact zeros (padding)."""
        window_start = np.arange(windows) * WINDOW_STEP * HOP  # (W,) first sample of each window
        keep: np.ndarray = window_start[None, :] < cls.signal_ends(waves)[:, None]
        keep[:, 0] = True
        return keep
