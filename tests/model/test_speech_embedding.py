"""The speech embedding computes only the windows that hold the recording, and pools them as if it had
run over the whole zero-padded clip.

Skips when ``openwakeword`` (which holds the ONNX files) is not installed, like ``test_lite.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

try:
    import openwakeword  # noqa: F401

    HAS_OPENWAKEWORD = True
except ImportError:
    HAS_OPENWAKEWORD = False

pytestmark = [
    pytest.mark.skipif(not HAS_OPENWAKEWORD, reason="openwakeword==0.4.0 is not installed (pip install -e .)"),
    pytest.mark.usefixtures("one_torch_thread"),
]

CLIP = 40000  # the lite preset's 2.5 s clip
STEP = 8 * 160  # samples between window starts


@pytest.fixture(scope="module")
def speech() -> Any:
    from model.encoders.speech_embedding import SpeechEmbedding

    return SpeechEmbedding(threads=1)


@pytest.fixture(scope="module")
def window_graph() -> Any:
    """openWakeWord's embedding model as shipped: one 76-frame window in, one embedding out."""
    import onnxruntime as ort

    from model.encoders.speech_embedding import package_model_dir

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(package_model_dir() / "embedding_model.onnx"), options,
                                providers=["CPUExecutionProvider"])


def speech_like(samples: int, seed: int) -> np.ndarray:
    """A voiced sound: a 120-200 Hz harmonic series under a syllable-rate envelope, plus breath noise;
    its last sample is not zero, so the signal ends exactly at ``samples``."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    f0 = 120 + 80 * rng.random()
    voiced = sum(np.sin(2 * np.pi * k * f0 * t + rng.random() * 6) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + rng.random() * 6) ** 2
    wave = 0.2 * envelope * voiced + 0.01 * rng.standard_normal(samples)
    wave[-1] = 0.05
    return wave.astype(np.float32)


def clip(signal_samples: int, length: int = CLIP, seed: int = 0, loud_end: bool = False) -> np.ndarray:
    """``signal_samples`` of speech-like signal, then zero padding up to ``length``."""
    out = np.zeros(length, np.float32)
    if signal_samples:
        out[:signal_samples] = speech_like(signal_samples, seed)
        if loud_end:  # quiet speech, then a loud tone at the end: it sets the spectrogram's -80 dB floor
            out[:signal_samples] *= 1e-4
            out[signal_samples - 400 : signal_samples] = 0.9 * np.sin(np.arange(400) * 0.4) + 0.05
    return out


def cases(length: int) -> dict[str, np.ndarray]:
    """Named clips of ``length`` samples (the signals that fit in it)."""
    from model.encoders.speech_embedding import MIN_SAMPLES

    signals = {  # name: (signal samples, loud end)
        "silence": (0, False),
        "one sample": (1, False),
        "MIN_SAMPLES of signal": (MIN_SAMPLES, False),
        "0.4 s": (6400, False),
        "0.6 s": (9600, False),
        "1 s": (16000, False),
        "ends at a window start": (5 * STEP, False),
        "ends one sample past it": (5 * STEP + 1, False),
        "ends one sample before it": (5 * STEP - 1, False),
        "ends at a later window start": (15 * STEP, False),
        "ends one sample past that": (15 * STEP + 1, False),
        "fills the clip": (length, False),
        "fills the clip, loud end": (length, True),
        "ends in the last window's tail, loud": (length - 300, True),
        "ends at the last window's end, loud": (length - 608, True),
    }
    named = {
        name: clip(n, length, seed=seed, loud_end=loud)
        for seed, (name, (n, loud)) in enumerate(signals.items())
        if n <= length
    }
    if length >= 16000:
        gap = clip(16000, length, seed=99)
        gap[4000:9000] = 0  # zeros inside the recording are signal, not padding
        named["1 s with a silent gap"] = gap
    return named


def reference(speech: Any, window_graph: Any, waves: np.ndarray) -> torch.Tensor:
    """The plain algorithm: spectrogram of the whole padded clip, every window through the shipped
    window graph one at a time, then pool the windows that start before the trailing zeros (and
    always the first)."""
    from model.encoders.speech_embedding import EMBEDDING_DIM, WINDOW_FRAMES, n_windows

    windows = n_windows(waves.shape[1])
    out = []
    for wave in waves:
        mel = speech.log_mel(wave)  # (frames, 32), the whole clip
        batch = np.stack([mel[w * 8 : w * 8 + WINDOW_FRAMES] for w in range(windows)])[..., None]
        emb = np.concatenate([window_graph.run(None, {"input_1": batch[i : i + 1]})[0] for i in range(windows)])
        emb_t = torch.from_numpy(emb.reshape(windows, EMBEDDING_DIM))  # (W, 96)
        nonzero = np.flatnonzero(wave)
        end = nonzero[-1] + 1 if len(nonzero) else 0
        keep = torch.from_numpy(np.arange(windows) * STEP < end)  # (W,)
        keep[0] = True
        mean = (emb_t * keep[:, None]).sum(0) / keep.sum()
        peak = emb_t.masked_fill(~keep[:, None], float("-inf")).amax(0)
        out.append(torch.cat([mean, peak]))
    return torch.stack(out)


@pytest.mark.parametrize("length", [CLIP, 24000, 12512])
def test_forward_equals_the_whole_clip_reference(speech: Any, window_graph: Any, length: int) -> None:
    named = cases(length)
    waves = np.stack(list(named.values()))
    batch = speech(torch.from_numpy(waves))  # (B, 192), one call: windows of all clips batched together
    expected = reference(speech, window_graph, waves)
    assert batch.shape == (len(waves), 192) and batch.dtype == torch.float32
    for i, name in enumerate(named):
        assert torch.allclose(batch[i], expected[i], atol=1e-5, rtol=0), name
        assert torch.allclose(speech(torch.from_numpy(waves[i : i + 1]))[0], expected[i], atol=1e-5, rtol=0), name


def test_a_loud_end_past_the_last_window_sets_the_floor(speech: Any, window_graph: Any) -> None:
    """Samples after the last window's end still count for the spectrogram floor: trimming them away
    would change the features (so the clip is not trimmed)."""
    from model.encoders.speech_embedding import MIN_SAMPLES, n_windows

    wave = clip(CLIP, seed=9, loud_end=True)
    cut = (n_windows(CLIP) - 1) * STEP + MIN_SAMPLES  # where the last window ends
    assert cut < CLIP
    trimmed = speech.log_mel(wave[:cut])
    whole = speech.log_mel(wave)[: len(trimmed)]
    assert not np.allclose(trimmed, whole, atol=1e-3)
    assert torch.allclose(speech(torch.from_numpy(wave[None]))[0], reference(speech, window_graph, wave[None])[0], atol=1e-5)


def test_embedding_runs_on_exactly_the_kept_windows(speech: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from model.encoders.speech_embedding import MIN_SAMPLES, n_frames, n_windows
    from serving import speech as serving_speech

    signal = [0, 1, 6400, 9600, 10 * STEP, 10 * STEP + 1, 16000, CLIP] * 4  # 32 clips
    waves = np.stack([clip(n, seed=i) for i, n in enumerate(signal)])
    kept = [max(1, -(-n // STEP)) for n in signal]  # windows starting before the signal end, at least 1
    kept = [min(k, n_windows(CLIP)) for k in kept]
    assert kept[:8] == [1, 1, 5, 8, 10, 11, 13, 22]

    calls: list[tuple[int, int]] = []  # (clips, frames) of each embedding call
    mel_samples: list[int] = []
    embedding_run, mel_run = speech.windows._embedding.run, speech.windows._melspectrogram.run

    def count_rows(outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
        calls.append(feeds["input_1"].shape[:2])
        return embedding_run(outputs, feeds)

    def count_samples(outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
        mel_samples.append(feeds["input"].shape[1])
        return mel_run(outputs, feeds)

    monkeypatch.setattr(speech.windows._embedding, "run", count_rows)
    monkeypatch.setattr(speech.windows._melspectrogram, "run", count_samples)
    monkeypatch.setattr(serving_speech, "FRAMES_PER_RUN", 1000)  # several calls for these 32 clips
    out = speech(torch.from_numpy(waves))
    assert out.shape == (32, 192) and torch.isfinite(out).all()
    # Every clip's spectrogram goes through the embedding graph once, clips together, padded to the
    # longest of their call, within FRAMES_PER_RUN frames a call (a longer clip alone).
    assert sum(n for n, _ in calls) == 32 and len(calls) > 1
    assert all(n * frames <= 1000 or n == 1 for n, frames in calls)
    frames = [n_frames(CLIP if n == CLIP else (k - 1) * STEP + MIN_SAMPLES) for n, k in zip(signal, kept)]
    assert [f for _, f in calls] == [max(frames[sum(n for n, _ in calls[:i]):][:c]) for i, (c, _) in enumerate(calls)]
    # Each clip's spectrogram covers its kept windows only; the full clip when it holds signal to the end.
    assert mel_samples == [CLIP if n == CLIP else (k - 1) * STEP + MIN_SAMPLES for n, k in zip(signal, kept)]
    # The batched answer is each clip's own.
    for i in (0, 2, 7):
        assert torch.equal(out[i], speech(torch.from_numpy(waves[i : i + 1]))[0])
