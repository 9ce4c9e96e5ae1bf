"""Google's speech embedding (the ``lite`` preset's speech encoder) in NumPy and ONNX Runtime.

    speech = SpeechWindows.from_package(threads=2)         # openWakeWord's two ONNX files
    pooled = speech.embed(waves)                           # (B, S) 16 kHz in [-1, 1] -> (B, 192)

What it computes, and why (the windows over the recording, not its padding; one spectrogram per
clip; windows batched across clips) is told in ``model/encoders/speech_embedding.py``, the PyTorch
module that wraps this class for the learner: both sides run this very code.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

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
FILES = ("melspectrogram.onnx", "embedding_model.onnx")


def package_model_dir() -> Path:
    """``resources/models`` inside the installed ``openwakeword`` package (found, not imported)."""
    spec = importlib.util.find_spec("openwakeword")
    for location in list(spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(location) / "resources" / "models"
        if (folder / FILES[0]).is_file():
            return folder
    raise FileNotFoundError("the speech embedding's files were not found: is openwakeword installed?")


def n_frames(samples: int) -> int:
    return (samples - FFT_WINDOW) // HOP + 1


def n_windows(samples: int) -> int:
    """Embedding windows for a clip of ``samples`` samples (windows running past the end are dropped)."""
    return (n_frames(samples) - WINDOW_FRAMES) // WINDOW_STEP + 1


def signal_ends(waves: np.ndarray) -> np.ndarray:
    """``(B,)`` int: where the trailing run of exact zeros (the padding) starts; 0 for silence."""
    nonzero = waves != 0
    ends: np.ndarray = np.where(nonzero.any(1), waves.shape[1] - np.argmax(nonzero[:, ::-1], axis=1), 0)
    return ends


def windows_with_signal(waves: np.ndarray, windows: int) -> np.ndarray:
    """``(B, W)`` bool: window ``w`` starts before the trailing run of exact zeros (padding)."""
    window_start = np.arange(windows) * WINDOW_STEP * HOP  # (W,) first sample of each window
    keep: np.ndarray = window_start[None, :] < signal_ends(waves)[:, None]
    keep[:, 0] = True
    return keep


def samples_needed(last_window: int, signal_end: int, samples: int) -> int:
    """How much of a clip the spectrogram must see for windows ``0..last_window`` to come out as
    from the whole clip: up to the end of ``last_window``, unless a spectrogram frame past that
    still holds signal (it could raise the graph's -80 dB floor; with the windows of
    :func:`windows_with_signal`, only when ``last_window`` is the clip's last window): then the whole
    clip. Frames of padding zeros never raise the floor."""
    needed = last_window * WINDOW_STEP * HOP + MIN_SAMPLES
    return needed if signal_end <= n_frames(needed) * HOP else samples


class SpeechWindows:
    """The two ONNX Runtime sessions and what runs between them (module docstring)."""

    def __init__(self, melspectrogram: Any, embedding: Any) -> None:
        self._melspectrogram = melspectrogram
        self._embedding = embedding
        self._mel_input = melspectrogram.get_inputs()[0].name  # "input"
        self._embedding_input = embedding.get_inputs()[0].name  # "input_1"

    @classmethod
    def from_files(cls, folder: Path, threads: int) -> "SpeechWindows":
        """Sessions on ``threads`` intra-op threads that sleep between calls, from ``folder``'s files."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        for name in FILES:
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name}: speech embedding model file not found "
                                        "(is openwakeword installed?)")
        return cls(*(ort.InferenceSession(os.fspath(folder / name), options, providers=["CPUExecutionProvider"])
                     for name in FILES))

    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        """One clip ``(S,)`` in [-1, 1] -> ``(frames, 32)``, on openWakeWord's scale."""
        pcm = (wave * PCM_SCALE).astype(np.float32)[None]  # (1, S)
        mel: np.ndarray = self._melspectrogram.run(None, {self._mel_input: pcm})[0]  # (1, 1, frames, 32)
        scaled: np.ndarray = mel[0, 0] / 10.0 + 2.0  # (frames, 32)
        return scaled

    def embed(self, waves: np.ndarray) -> np.ndarray:
        """``(B, S)`` float32 16 kHz waveforms (``S >= MIN_SAMPLES``) -> ``(B, 192)``: the mean and the
        maximum of each clip's window embeddings."""
        if waves.ndim != 2:
            raise ValueError(f"waveforms: expected (B, S), got shape {tuple(waves.shape)}")
        if waves.shape[1] < MIN_SAMPLES:
            raise ValueError(f"waveforms: need at least {MIN_SAMPLES} samples at 16 kHz, got {waves.shape[1]}")
        keep = windows_with_signal(waves, n_windows(waves.shape[1]))  # (B, W)
        ends = signal_ends(waves)  # (B,)
        windows: list[np.ndarray] = []  # (76, 32) each
        counts: list[int] = []  # kept windows per clip
        for wave, row, end in zip(waves, keep, ends):
            kept = np.flatnonzero(row)  # (K,) window indices, in order
            mel = self.log_mel(wave[: samples_needed(int(kept[-1]), int(end), len(wave))])  # (frames, 32)
            windows.extend(mel[s : s + WINDOW_FRAMES] for s in kept * WINDOW_STEP)
            counts.append(len(kept))
        flat = np.stack(windows)[..., None]  # (N, 76, 32, 1): every clip's kept windows
        chunks = np.concatenate([  # (N, 1, 1, 96), in chunks: ONNX Runtime keeps its peak memory
            self._embedding.run(None, {self._embedding_input: flat[i : i + WINDOWS_PER_RUN]})[0]
            for i in range(0, len(flat), WINDOWS_PER_RUN)
        ])
        emb = chunks.reshape(len(flat), EMBEDDING_DIM)  # (N, 96)
        bounds = np.cumsum(counts)[:-1]
        # B x (192,): the mean summed in float64 (one rounding, whatever the order of the windows)
        pooled = [np.concatenate([e.mean(0, dtype=np.float64), e.max(0)]) for e in np.split(emb, bounds)]
        return np.stack(pooled).astype(np.float32)  # (B, 192)
