"""``serving/inputs.py`` prepares pictures and sounds as the learner's PyTorch code does (to float32 rounding).

Pictures of many shapes (grey, alpha, larger and smaller than the model's input), sounds at the rates
people send (8 to 48 kHz), against ``model/images.py`` and ``model/audio.py``; bad inputs are refused
by the field at fault.
"""

from __future__ import annotations

import numpy as np
import pytest

from model.audio import prepare_waveforms as torch_waveforms
from model.images import prepare_images as torch_images
from serving.inputs import InputError, prepare_images, prepare_waveforms

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("shape", [(28, 28), (32, 32, 3), (480, 640, 3), (100, 37, 4), (160, 160, 3), (90, 300, 1)])
def test_pictures_are_resized_and_normalised_as_pytorch_does(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    for picture in (rng.integers(0, 256, shape, dtype=np.uint8), rng.random(shape).astype(np.float32)):
        want = torch_images([picture], 160, MEAN, STD).numpy()
        got = prepare_images([picture], 160, MEAN, STD)
        assert got.shape == want.shape == (1, 3, 160, 160) and got.dtype == np.float32
        assert np.abs(got - want).max() <= 2e-6  # values up to about 2.6: float32 rounding


@pytest.mark.parametrize("rate, samples", [(8000, 2726), (11025, 30000), (16000, 5000), (22050, 1000),
                                           (44100, 220500), (48000, 48000)])
def test_sounds_are_resampled_and_fitted_as_torchaudio_does(rate: int, samples: int) -> None:
    wave = (np.random.default_rng(rate).standard_normal(samples) * 0.1).astype(np.float32)
    want = torch_waveforms([wave], [rate], 16000, 80000).numpy()
    got = prepare_waveforms([wave], [rate], 16000, 80000)
    assert got.shape == want.shape == (1, 80000)
    assert np.abs(got - want).max() <= 1e-6


def test_bad_inputs_are_refused_by_the_field_at_fault() -> None:
    good = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(InputError) as caught:
        prepare_images([good, np.full((8, 8), 2.0, np.float32)], 32, MEAN, STD)
    assert caught.value.field == "images[1]" and "[0, 1]" in caught.value.problem
    with pytest.raises(InputError) as caught:
        prepare_waveforms([np.zeros(100, np.float32)], [4000], 16000, 1600)
    assert caught.value.field == "audio[0].sample_rate"
    with pytest.raises(InputError) as caught:
        prepare_waveforms([np.array([0.0, np.nan], np.float32)], [16000], 16000, 1600)
    assert caught.value.field == "audio[0]" and "NaN" in caught.value.problem
