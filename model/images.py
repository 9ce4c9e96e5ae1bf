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


def image_to_tensor(image: np.ndarray, field: str = "image") -> torch.Tensor:
    """One decoded image -> ``(3, H, W)`` float32 in [0, 1]."""
    if not isinstance(image, np.ndarray):
        raise InvalidInputError(field, f"expected a numpy array, got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InvalidInputError(field, f"expected shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidInputError(field, f"empty image of shape {image.shape}")
    if image.dtype == np.uint8:
        x = torch.tensor(image, dtype=torch.float32) / 255.0
    elif np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise InvalidInputError(field, "contains NaN or infinite values")
        if image.min() < 0.0 or image.max() > 1.0:
            raise InvalidInputError(field, "floating-point pixels must lie in [0, 1]")
        x = torch.tensor(image, dtype=torch.float32)
    else:
        raise InvalidInputError(field, f"unsupported dtype {image.dtype}; use uint8 or float")
    x = x[:, :, :3] if x.shape[2] == 4 else x
    x = x.expand(-1, -1, 3) if x.shape[2] == 1 else x
    return x.permute(2, 0, 1).contiguous()  # (3, H, W)


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
