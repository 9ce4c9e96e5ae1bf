"""The ``lite`` preset's audio encoder: a speech model and a sound-event model, side by side.

    speech     Google's speech embedding (model/encoders/speech_embedding.py)   192  mean + max of windows
    sounds     YAMNet, AudioSet's 521 sound events (model/encoders/yamnet.py)  1024  mean of 0.96 s patches

A classroom hears both: words (a spoken digit, a name called) and everyday sounds (doors, clapping,
laughter, rain, engines). The speech embedding was trained on speech and serves words; YAMNet was
trained on AudioSet and serves sounds. Measured on validation splits (docs/lite.md, "Audio: two
encoders side by side"; ``python -m bench.audio_encoders``), each wins on its own kind of data and the
two together lose on neither, so ``lite`` reads both: each L2-normalised, then joined, ``(B, 1216)``. What follows (the statistics head, the
projection P) sees one audio feature.

YAMNet reads only the recording, not the zero padding that fits a short recording to the clip
length (the trailing run of exact zeros, as the speech embedding also finds it): a 0.4 s word gets
one patch, not five of silence.

Both are frozen. The speech embedding runs its own ONNX files on ONNX Runtime; YAMNet runs in PyTorch
(``onnx_files`` names the speech files, so export/ copies them and leaves this encoder running itself).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from model.encoders.speech_embedding import SpeechEmbedding
from model.encoders.yamnet import YAMNet


class SpeechAndSounds(nn.Module):
    """Frozen ``(B, S)`` 16 kHz waveforms -> ``(B, 192 + 1024)``: ``[speech, sounds]``, each unit-length."""

    def __init__(self, threads: int | None = None) -> None:
        super().__init__()
        self.speech = SpeechEmbedding(threads=threads)
        self.sounds = YAMNet()
        self.onnx_files: tuple[Path, ...] = self.speech.onnx_files
        self.requires_grad_(False).eval()

    @property
    def output_dim(self) -> int:
        return self.speech.output_dim + self.sounds.output_dim

    def __deepcopy__(self, memo: dict[int, object]) -> "SpeechAndSounds":
        return self  # frozen and stateless: copies share the sessions and weights

    def train(self, mode: bool = True) -> "SpeechAndSounds":
        return super().train(False)

    @torch.no_grad()
    def sound_events(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` -> ``(B, 1024)``: YAMNet over each clip's recording (padding left out), unit-length."""
        ends = SpeechEmbedding.signal_ends(waveforms.detach().cpu().numpy())
        sounds = torch.cat([self.sounds(wave[None, : max(int(end), 1)]) for wave, end in zip(waveforms, ends)])
        return F.normalize(sounds.to(waveforms.device), dim=1)

    @torch.no_grad()
    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        speech = self.speech(waveforms)  # validates the shape and length
        return torch.cat([F.normalize(speech, dim=1), self.sound_events(waveforms)], dim=1)
