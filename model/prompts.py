"""Text diversity: every class name becomes N = 35 prompts; its prototype is their mean direction.

    prototype(c) = normalise( mean_i normalise( text_encoder(template_i.format(c)) ) )

The templates describe what a camera and a microphone in a room would capture, so one set serves
classroom scenes ("a teacher lecturing") and generic classes ("seven") alike.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.nn import functional as F

TEMPLATES: tuple[str, ...] = (
    "a photo of {}.",
    "a picture of {}.",
    "an image showing {}.",
    "a video frame of {}.",
    "a camera view of {}.",
    "a blurry photo of {}.",
    "a dark photo of {}.",
    "a bright photo of {}.",
    "a close-up photo of {}.",
    "a cropped photo of {}.",
    "a low resolution photo of {}.",
    "a wide shot of {}.",
    "a classroom photo of {}.",
    "a drawing of {}.",
    "a sketch of {}.",
    "a handwritten {}.",
    "a black and white photo of {}.",
    "the sound of {}.",
    "a recording of {}.",
    "an audio clip of {}.",
    "the noise of {}.",
    "a loud recording of {}.",
    "a quiet recording of {}.",
    "someone saying {}.",
    "a voice saying {}.",
    "a spoken {}.",
    "a microphone recording of {}.",
    "what {} sounds like.",
    "what {} looks like.",
    "this is {}.",
    "an example of {}.",
    "a scene of {}.",
    "a moment of {}.",
    "there is {} here.",
    "{}.",
)
assert len(TEMPLATES) == 35


def expand(class_name: str, templates: Sequence[str] = TEMPLATES) -> list[str]:
    return [t.format(class_name) for t in templates]


def class_prototypes(
    encode_text: Callable[[Sequence[str]], torch.Tensor],
    class_names: Sequence[str],
    templates: Sequence[str] = TEMPLATES,
) -> torch.Tensor:
    """``(C, E)`` unit prototypes, one per class, each the mean of its normalised prompt embeddings."""
    texts = [p for name in class_names for p in expand(name, templates)]
    emb = F.normalize(encode_text(texts), dim=-1)  # (C * N, E)
    emb = emb.view(len(class_names), len(templates), -1).mean(dim=1)  # (C, E)
    return F.normalize(emb, dim=-1)
