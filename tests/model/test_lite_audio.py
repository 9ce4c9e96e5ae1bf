"""The lite preset's audio encoder: the speech embedding and YAMNet side by side."""

from __future__ import annotations

import pytest
import torch

from model.encoders.lite_audio import SpeechAndSounds
from model.encoders.speech_embedding import SpeechEmbedding
from model.encoders.yamnet import YAMNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def encoder() -> SpeechAndSounds:
    return SpeechAndSounds(threads=1)


def _word(seconds: float = 0.6, seed: int = 0) -> torch.Tensor:
    """A voiced burst: a few harmonics under an envelope, with a little noise."""
    t = torch.arange(int(16000 * seconds)) / 16000
    g = torch.Generator().manual_seed(seed)
    wave = sum(torch.sin(2 * torch.pi * f * t) / k for k, f in enumerate((180.0, 360.0, 540.0, 900.0), 1))
    return 0.3 * wave * torch.hann_window(len(t), periodic=False) + 0.01 * torch.randn(len(t), generator=g)


def test_each_encoder_counts_alike_and_both_are_kept(encoder: SpeechAndSounds) -> None:
    clips = torch.stack([torch.nn.functional.pad(_word(seed=s), (0, 80000 - 9600)) for s in (0, 1)])
    out = encoder(clips)
    assert out.shape == (2, 192 + 1024) == (2, encoder.output_dim)
    speech, sounds = out[:, :192], out[:, 192:]
    assert torch.allclose(speech.norm(dim=1), torch.ones(2)) and torch.allclose(sounds.norm(dim=1), torch.ones(2))
    alone = SpeechEmbedding(threads=1)(clips)
    assert torch.allclose(speech, torch.nn.functional.normalize(alone, dim=1), atol=1e-6)


def test_yamnet_hears_the_recording_not_its_padding(encoder: SpeechAndSounds) -> None:
    """A 0.6 s word padded to 5 s gets YAMNet's feature of the word alone (one patch, not ten of silence)."""
    word = _word()
    padded = torch.nn.functional.pad(word, (0, 80000 - len(word)))[None]
    sounds = encoder(padded)[:, 192:]
    expected = torch.nn.functional.normalize(YAMNet()(word[None]), dim=1)
    assert torch.allclose(sounds, expected, atol=1e-5)
    silence_padded = torch.nn.functional.normalize(YAMNet()(padded), dim=1)
    assert not torch.allclose(sounds, silence_padded, atol=1e-3)


def test_copies_share_the_frozen_encoder(encoder: SpeechAndSounds) -> None:
    import copy

    assert copy.deepcopy(encoder) is encoder and not encoder.training
    assert encoder.onnx_files == encoder.speech.onnx_files  # export/ copies the speech files, runs the rest
