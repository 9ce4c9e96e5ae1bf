"""Image preparation: decoded arrays -> normalised ``(B, 3, H, W)`` tensors.

Accepted per image: ``(H, W)`` grey, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (alpha dropped),
``uint8`` in [0, 255] or floating point in [0, 1]. Images are resized (bilinear, antialiased) to
the preset's square input size and normalised with its mean and standard deviation.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from serving.inputs import picture_array
from serving.inputs import prepare_images as serve_images


def image_to_tensor(image: np.ndarray, field: str = "image") -> torch.Tensor:
    """One decoded image -> ``(3, H, W)`` float32 in [0, 1] (``serving.inputs.picture_array`` checks it)."""
    return torch.from_numpy(picture_array(image, field))


def prepare_images(
    images: Sequence[np.ndarray],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Decoded images -> ``(B, 3, size, size)``, resized (bilinear, antialiased, as PyTorch's
    ``interpolate``) and normalised. Computed by ``serving.inputs.prepare_images``, so that the learner
    and a serving process without PyTorch prepare a picture bit for bit alike."""
    return torch.from_numpy(serve_images(images, size, mean, std))
