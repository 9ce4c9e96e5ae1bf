"""``serving/inputs.py`` prepares pictures and sounds as PyTorch and torchaudio do (to float32 rounding).

The learner prepares its inputs with these functions too (``model/images.py``, ``model/audio.py``), so
they are held to the references they replace: ``torch.nn.functional.interpolate`` (bilinear,
antialiased) for pictures of many shapes (grey, alpha, larger and smaller than the model's input),
``torchaudio.functional.resample`` for sounds at the rates people send (8 to 48 kHz). Bad inputs are
refused by the field at fault.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio.functional as AF
from torch.nn import functional as F

from serving.inputs import InputError, fit_length, picture_array, prepare_images, prepare_waveforms

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("shape", [(28, 28), (32, 32, 3), (480, 640, 3), (100, 37, 4), (160, 160, 3), (90, 300, 1)])
def test_pictures_are_resized_and_normalised_as_pytorch_does(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    for picture in (rng.integers(0, 256, shape, dtype=np.uint8), rng.random(shape).astype(np.float32)):
        x = torch.from_numpy(picture_array(picture))[None]
        if x.shape[-2:] != (160, 160):
            x = F.interpolate(x, size=(160, 160), mode="bilinear", antialias=True, align_corners=False)
        want = ((x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)).numpy()
        got = prepare_images([picture], 160, MEAN, STD)
        assert got.shape == want.shape == (1, 3, 160, 160) and got.dtype == np.float32
        assert np.abs(got - want).max() <= 2e-6  # values up to about 2.6: float32 rounding


@pytest.mark.parametrize("rate, samples", [(8000, 2726), (11025, 30000), (16000, 5000), (22050, 1000),
                                           (44100, 220500), (48000, 48000)])
def test_sounds_are_resampled_and_fitted_as_torchaudio_does(rate: int, samples: int) -> None:
    wave = (np.random.default_rng(rate).standard_normal(samples) * 0.1).astype(np.float32)
    resampled = AF.resample(torch.from_numpy(wave), rate, 16000) if rate != 16000 else torch.from_numpy(wave)
    want = fit_length(resampled.numpy(), 80000)[None]
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
