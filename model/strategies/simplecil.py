"""`simplecil`: nothing trains; each class is the mean of its frozen features, scored by cosine.

SimpleCIL (Zhou et al., "Revisiting class-incremental learning with pre-trained models", 2023): the
prototype of a class is the mean of its examples' frozen features (the image and audio encoders' own
outputs, each L2-normalised). The simplest exact head: a class's mean never changes once learned.
"""

from __future__ import annotations

from model.strategies.base import Strategy


class SimpleCIL(Strategy):
    name = "simplecil"
    trains = False
    head_kind = "class-means"
    head_features = "frozen"
