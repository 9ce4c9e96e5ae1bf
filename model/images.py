"""Image preparation: decoded arrays -> normalised ``(B, 3, H, W)`` tensors.

Accepted per image: ``(H, W)`` grey, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (alpha dropped),
``uint8`` in [0, 255] or floating point in [0, 1]. Images are resized (bilinear, antialiased) to
the preset's square input size and normalised with its mean and standard deviation.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from model.errors import InvalidInputError
from serving.inputs import picture_array


def image_to_tensor(image: np.ndarray, field: str = "image") -> torch.Tensor:
    """One decoded image -> ``(3, H, W)`` float32 in [0, 1] (``serving.inputs.picture_array`` checks it)."""
    return torch.from_numpy(picture_array(image, field))


def prepare_images(
    images: Sequence[np.ndarray],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Decoded images -> ``(B, 3, size, size)``, resized and normalised."""
    if len(images) == 0:
        raise InvalidInputError("images", "no images given")
    out = []
    for i, image in enumerate(images):
        x = image_to_tensor(image, field=f"images[{i}]")[None]  # (1, 3, H, W)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x)
    batch = torch.cat(out)  # (B, 3, size, size)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (batch - m) / s
