"""Convolutional experts: the MIFE bottleneck adapter for CNN blocks, whose output may change shape.

A transformer block keeps the token shape, so its expert maps ``(B, N, D) -> (B, N, D)``
(:class:`model.experts.LoRAExpert`). A CNN block (an inverted-residual block of EfficientNet) may
change the channel count and halve the resolution, so its expert reads the block *input* and writes
a tensor shaped like the block *output*::

    h: (B, C_in, H, W) --avg-pool(stride)--> (B, C_in, H', W')     # H' = ceil(H / stride)
       --down: 1x1 conv C_in -> r -> m (LoRA)--> GELU
       --up:   1x1 conv m -> r -> C_out (LoRA, last factor zero)--> (B, C_out, H', W')

The 1x1 convolutions are computed as linear maps over the channels of each pixel (``nn.Linear`` on a
channels-last view), which is the same operation and about a third faster on CPU than ``Conv2d``.

Pooling before the 1x1 convolutions keeps the expert cheap and matches a strided block's output
size (``ceil_mode`` gives ``ceil(H / stride)``, which is what both TensorFlow "SAME" padding and
PyTorch's symmetric ``k // 2`` padding produce). The last factor starts at zero, so a new expert is a
no-op until it is trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from model.experts import ExpertConfig, ExpertFactory


@dataclass(frozen=True)
class ConvBlockShape:
    """What an expert for one CNN block must know: input channels, output channels, stride."""

    in_channels: int
    out_channels: int
    stride: int = 1

    def __post_init__(self) -> None:
        if self.in_channels < 1:
            raise ValueError(f"in_channels: must be >= 1, got {self.in_channels}")
        if self.out_channels < 1:
            raise ValueError(f"out_channels: must be >= 1, got {self.out_channels}")
        if self.stride < 1:
            raise ValueError(f"stride: must be >= 1, got {self.stride}")


class ConvExpert(nn.Module):
    """LoRA-factored bottleneck adapter over channels: ``(B, C_in, H, W) -> (B, C_out, H', W')``.

    The bottleneck is ``min(config.bottleneck, max(C_in, C_out))`` (an adapter wider than its block
    would only add cost) and the rank is at most the bottleneck.
    """

    def __init__(self, shape: ConvBlockShape, config: ExpertConfig) -> None:
        super().__init__()
        m = min(config.bottleneck, max(shape.in_channels, shape.out_channels))
        r = min(config.rank, m)
        self.stride = shape.stride
        self.down_a = nn.Linear(shape.in_channels, r, bias=False)
        self.down_b = nn.Linear(r, m)
        self.up_a = nn.Linear(m, r, bias=False)
        self.up_b = nn.Linear(r, shape.out_channels)
        self.scale = config.scale
        nn.init.zeros_(self.up_b.weight)
        nn.init.zeros_(self.up_b.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            h = F.avg_pool2d(h, kernel_size=self.stride, stride=self.stride, ceil_mode=True)  # (B, C_in, H', W')
        z = h.permute(0, 2, 3, 1)  # (B, H', W', C_in): a 1x1 convolution is a linear map per pixel
        z = F.gelu(self.down_b(self.down_a(z)))  # (B, H', W', m)
        out: torch.Tensor = self.scale * self.up_b(self.up_a(z))  # (B, H', W', C_out)
        return out.permute(0, 3, 1, 2)  # (B, C_out, H', W')


def conv_expert_factory(shape: ConvBlockShape, config: ExpertConfig) -> ExpertFactory:
    """A factory for one block's experts. The ``width`` a mixture passes in is ``C_in`` (checked)."""

    def build(width: int) -> nn.Module:
        if width != shape.in_channels:
            raise ValueError(f"width: the mixture's width {width} is not the block's in_channels {shape.in_channels}")
        return ConvExpert(shape, config)

    return build
