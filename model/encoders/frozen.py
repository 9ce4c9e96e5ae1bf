"""The frozen parts of a pre-trained encoder, pinned to eval mode.

A tower's stem, blocks and head never train. Batch norm (EfficientNet) would switch to batch
statistics and dropout (BERT) would switch on if a caller set the model around them to train, so
every frozen piece of the ``lite`` encoders derives from :class:`FrozenPiece`, whose ``train()``
always leaves it in eval mode. The adapters next to them still follow ``train()``/``eval()``.
"""

from __future__ import annotations

from torch import nn


class FrozenPiece(nn.Module):
    def train(self, mode: bool = True) -> "FrozenPiece":
        return super().train(False)
