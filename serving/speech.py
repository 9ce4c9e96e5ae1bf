"""Google's speech embedding (the ``lite`` preset's speech encoder) in NumPy and ONNX Runtime.

    speech = SpeechWindows.from_files(package_model_dir(), threads=2)   # openWakeWord's two ONNX files
    pooled = speech.embed(waves)                          # (B, S) 16 kHz in [-1, 1] -> (B, 192)

What it computes, and why (the windows over the recording, not its padding; one spectrogram per
clip; the embedding model run over each clip's whole spectrogram, ``serving/speech_graph.py``) is
told in ``model/encoders/speech_embedding.py``, the PyTorch module that wraps this class for the
learner: both sides run this very code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

import numpy as np

from serving.speech_graph import (  # the embedding graph's window geometry
    MEL_BINS,
    WINDOW_FRAMES,
    WINDOW_STEP,
    check_whole_clip_graph,
    n_windows_of_frames,
    whole_clip_graph,
)

SAMPLE_RATE = 16000
FFT_WINDOW = 512
HOP = 160
EMBEDDING_DIM = 96
POOLED_DIM = 2 * EMBEDDING_DIM
PCM_SCALE = 32767.0  # openWakeWord feeds 16-bit PCM values as floats
FRAMES_PER_RUN = 64 * WINDOW_FRAMES  # 4,864 spectrogram frames (padding included) per embedding call: bounds its arena
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
    return n_windows_of_frames(n_frames(samples))


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


def _groups(lengths: list[int], budget: int) -> list[tuple[int, int, int]]:
    """Consecutive runs ``(start, end, longest)`` of items whose count times their longest length stays
    within ``budget`` (an item longer than that forms a run alone): what one padded graph call holds."""
    runs = []
    start = 0
    while start < len(lengths):
        end, longest = start + 1, lengths[start]
        while end < len(lengths) and (end + 1 - start) * max(longest, lengths[end]) <= budget:
            longest = max(longest, lengths[end])
            end += 1
        runs.append((start, end, longest))
        start = end
    return runs


class SpeechWindows:
    """The two ONNX Runtime sessions and what runs between them (module docstring). ``embedding``
    runs the embedding model over whole clips (``serving/speech_graph.py``)."""

    def __init__(self, melspectrogram: Any, embedding: Any) -> None:
        self._melspectrogram = melspectrogram
        self._embedding = embedding  # over whole clips (serving/speech_graph.py)
        self._mel_input = melspectrogram.get_inputs()[0].name  # "input"
        self._embedding_input = embedding.get_inputs()[0].name  # "input_1"

    @classmethod
    def from_bytes(cls, melspectrogram: bytes, embedding: bytes, session: Callable[[bytes], Any],
                   whole_clip: bytes | None = None) -> "SpeechWindows":
        """From the two files' bytes (openWakeWord's, or a base's copies); ``session`` makes an ONNX
        Runtime session of a model's bytes; ``whole_clip``: the embedding graph already edited to run
        over whole clips (a base stores it), checked against ``embedding`` here. Raises
        :class:`serving.speech_graph.SpeechGraphError` for an embedding model that cannot run over
        whole clips, or an edited graph that does not answer as it does."""
        if whole_clip is None:
            whole_clip = whole_clip_graph(embedding)
        else:
            check_whole_clip_graph(embedding, whole_clip)
        return cls(session(melspectrogram), session(whole_clip))

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
        melspectrogram, embedding = ((folder / name).read_bytes() for name in FILES)
        return cls.from_bytes(melspectrogram, embedding,
                              session=lambda model: ort.InferenceSession(model, options,
                                                                         providers=["CPUExecutionProvider"]))

    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        """One clip ``(S,)`` in [-1, 1] -> ``(frames, 32)``, on openWakeWord's scale. One clip a call:
        the graph's floor is 80 dB below the maximum of its whole input, and a batch of clips would
        also change the convolution's rounding (by 1e-5 dB, measured)."""
        pcm = (wave * PCM_SCALE).astype(np.float32)[None]  # (1, S)
        mel: np.ndarray = self._melspectrogram.run(None, {self._mel_input: pcm})[0]  # (1, 1, frames, 32)
        scaled: np.ndarray = mel[0, 0] / 10.0 + 2.0  # (frames, 32)
        return scaled

    def _windows(self, mels: list[np.ndarray]) -> list[np.ndarray]:
        """Spectrograms ``(F_i, 32)`` -> each one's window embeddings ``(W_i, 96)``, window ``w`` over
        frames ``8w .. 8w + 75``. Clips go through the graph together, zero-padded to the longest of
        their group (a window reads only its own frames, so the padding changes none that is returned),
        ``FRAMES_PER_RUN`` frames (padding included) at a time."""
        out: list[np.ndarray] = []
        for start, end, longest in _groups([len(m) for m in mels], FRAMES_PER_RUN):
            batch = np.zeros((end - start, longest, MEL_BINS, 1), dtype=np.float32)
            for row, mel in enumerate(mels[start:end]):
                batch[row, : len(mel), :, 0] = mel
            embedded = self._embedding.run(None, {self._embedding_input: batch})[0]  # (n, W, 1, 96)
            out.extend(embedded[row, : n_windows_of_frames(len(mel)), 0] for row, mel in enumerate(mels[start:end]))
        return out

    def embed(self, waves: np.ndarray) -> np.ndarray:
        """``(B, S)`` float32 16 kHz waveforms (``S >= MIN_SAMPLES``) -> ``(B, 192)``: the mean and the
        maximum of each clip's window embeddings."""
        if waves.ndim != 2:
            raise ValueError(f"waveforms: expected (B, S), got shape {tuple(waves.shape)}")
        if waves.shape[1] < MIN_SAMPLES:
            raise ValueError(f"waveforms: need at least {MIN_SAMPLES} samples at 16 kHz, got {waves.shape[1]}")
        keep = windows_with_signal(waves, n_windows(waves.shape[1]))  # (B, W)
        ends = signal_ends(waves)  # (B,)
        kept = [np.flatnonzero(row) for row in keep]  # (K_i,) window indices, in order
        mels = [self.log_mel(wave[: samples_needed(int(k[-1]), int(end), len(wave))])  # (frames, 32)
                for wave, k, end in zip(waves, kept, ends)]
        pooled = []
        for every, k in zip(self._windows(mels), kept):
            e = every[k]  # (K, 96): the kept windows
            # the mean summed in float64 (one rounding, whatever the order of the windows)
            pooled.append(np.concatenate([e.mean(0, dtype=np.float64), e.max(0)]))
        return np.stack(pooled).astype(np.float32)  # (B, 192)
