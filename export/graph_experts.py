"""A block's convolutional experts as four dense 1x1 convolutions, for the exported graphs.

In PyTorch each :class:`~model.conv_experts.ConvExpert` computes its 1x1 convolutions as linear maps
on a channels-last view (faster there). In an ONNX graph that costs two transposes of the block's
activations per expert and a chain of small nodes per expert. Here the ``E`` experts of a block
become four convolutions over all of them at once::

    p = avg_pool(h)                                              (B, C_in, H', W')   when strided
    z = conv1x1(p, [down_a_1; ...; down_a_E])                    (B, E*r, H', W')
    z = gelu(conv1x1(z, blockdiag(down_b_1 .. down_b_E)))        (B, E*m, H', W')
    z = conv1x1(z, blockdiag(up_a_1 .. up_a_E)) * gate per expert  (B, E*r, H', W')
    out = scale * (conv1x1(z, [up_b_1 ... up_b_E]) + sum_e gate_e bias_e)   (B, C_out, H', W')

the same sums as :class:`~model.experts.MixtureOfExperts` with dense dispatch, with the weights
copied from the learned experts (the router is the mixture's own). The block-diagonal weights are
zero off each expert's block: a dense convolution computes those zeros too, and was as fast as the
grouped one it equals on CPU.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from model.conv_experts import ConvExpert
from model.experts import MixtureOfExperts


def fusable(mixture: MixtureOfExperts) -> bool:
    """Whether every expert of ``mixture`` is a ConvExpert with the same shape (and there is one)."""
    experts = list(mixture.experts.values())
    if not experts or not all(isinstance(e, ConvExpert) for e in experts):
        return False
    shapes = {(e.stride, e.scale, e.down_a.weight.shape, e.down_b.weight.shape, e.up_a.weight.shape,
               e.up_b.weight.shape) for e in cast(list[ConvExpert], experts)}
    return len(shapes) == 1


def _stack(weights: list[torch.Tensor]) -> torch.Tensor:
    """``E`` linear weights ``(out, in)`` -> one 1x1 convolution weight ``(E*out, in, 1, 1)``."""
    return torch.cat([w.detach() for w in weights])[:, :, None, None].clone()


def _block_diagonal(weights: list[torch.Tensor]) -> torch.Tensor:
    """``E`` linear weights ``(out, in)`` -> one 1x1 convolution ``(E*out, E*in, 1, 1)``, zero off the
    diagonal blocks: each expert reads only its own channels."""
    rows = sum(int(w.shape[0]) for w in weights)
    out = torch.zeros(rows, sum(int(w.shape[1]) for w in weights))
    r = c = 0
    for w in weights:
        out[r:r + w.shape[0], c:c + w.shape[1]] = w.detach()
        r, c = r + int(w.shape[0]), c + int(w.shape[1])
    return out[:, :, None, None]


class FusedConvMixture(nn.Module):
    """A :class:`MixtureOfExperts` of ConvExperts as four 1x1 convolutions (module docstring)."""

    def __init__(self, mixture: MixtureOfExperts) -> None:
        super().__init__()
        if not fusable(mixture):
            raise ValueError("mixture: needs ConvExperts of one shape")
        experts = cast(list[ConvExpert], list(mixture.experts.values()))
        first = experts[0]
        self.mixture = mixture  # its router gives the gates
        self.n_experts = len(experts)
        self.rank = first.up_a.weight.shape[0]
        self.stride = first.stride
        self.scale = first.scale
        self.register_buffer("down_a", _stack([e.down_a.weight for e in experts]))
        self.register_buffer("down_b", _block_diagonal([e.down_b.weight for e in experts]))
        self.register_buffer("down_b_bias", torch.cat([e.down_b.bias.detach() for e in experts]).clone())
        self.register_buffer("up_a", _block_diagonal([e.up_a.weight for e in experts]))
        # up_b of every expert side by side: (C_out, E*r); each expert's rows are scaled by its gate first.
        self.register_buffer("up_b", torch.cat([e.up_b.weight.detach() for e in experts], dim=1)[:, :, None, None]
                             .clone())
        self.register_buffer("up_b_bias", torch.stack([e.up_b.bias.detach() for e in experts]).clone())  # (E, C_out)

    down_a: torch.Tensor
    down_b: torch.Tensor
    down_b_bias: torch.Tensor
    up_a: torch.Tensor
    up_b: torch.Tensor
    up_b_bias: torch.Tensor

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        g = self.mixture.gates(h)  # (B, E)
        if self.stride > 1:
            h = F.avg_pool2d(h, kernel_size=self.stride, stride=self.stride, ceil_mode=True)
        z = F.conv2d(h, self.down_a)  # (B, E*r, H', W')
        z = F.gelu(F.conv2d(z, self.down_b, self.down_b_bias))  # (B, E*m, H', W')
        z = F.conv2d(z, self.up_a)  # (B, E*r, H', W')
        z = z * g.repeat_interleave(self.rank, dim=1)[:, :, None, None]  # expert e's channels times its gate
        bias = g @ self.up_b_bias  # (B, C_out): sum_e g_e b_e
        mixed: torch.Tensor = self.scale * (F.conv2d(z, self.up_b) + bias[:, :, None, None])
        return mixed


def fuse_conv_mixtures(adapters: nn.ModuleList) -> None:
    """Replaces, in place, every fusable mixture of ``adapters`` by its fused form."""
    for i, module in enumerate(adapters):
        if isinstance(module, MixtureOfExperts) and fusable(module):
            adapters[i] = FusedConvMixture(module)
