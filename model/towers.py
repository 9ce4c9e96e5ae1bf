"""An encoder cut where the adapters attach: a frozen stem, frozen blocks, a frozen head.

Every adaptable encoder in the project (the CLIP image and text transformers, the `lite` CNN and
MiniLM towers) is expressed as a :class:`Tower`::

    x, ctx = stem(inputs)                      # frozen: embeddings, positional terms, masks
    for block, adapter in zip(blocks, adapters):
        y, h = block(x, ctx)                   # frozen: attention + feed-forward, and the adapter input
        x = y + adapter(h)                     # trainable: the mixture of experts, parallel to the FFN
    feature = head(x, ctx)                     # frozen: final norm, pooling, projection

Each frozen piece is an ``nn.Module`` with a tensor-only signature, so ``export/`` can turn it into an
ONNX/TensorRT segment and hand ``(y, h)`` back to PyTorch. The frozen parts never change after
construction; only ``adapters`` (a ``ModuleList`` of :class:`model.experts.MixtureOfExperts`) learn.

``ctx`` is whatever the blocks and head need besides the hidden state: ``None`` for images, an
attention mask or token ids for text. Blocks must treat it as read-only.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterable, Protocol, Sequence, TypeVar, cast

import torch
from torch import nn

from model.experts import ExpertFactory, MixtureOfExperts, RouterConfig


class Stem(Protocol):
    def __call__(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...


class FrozenBlock(Protocol):
    def __call__(self, x: torch.Tensor, ctx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]: ...


class Head(Protocol):
    def __call__(self, x: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor: ...


class FrozenRunner(Protocol):
    """Runs a tower's frozen pieces somewhere else (ONNX Runtime, TensorRT); see ``export/``.

    Used only when no gradient is needed: training always runs the PyTorch modules, because the
    gradient of an early block's experts flows through the later frozen blocks.
    """

    def stem(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def block(self, index: int, x: torch.Tensor, ctx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]: ...

    def head(self, x: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor: ...


T = TypeVar("T")

RunBlock = Callable[[int, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]


def deepcopy_sharing(obj: T, memo: dict[int, object], shared: Iterable[object]) -> T:
    """``copy.deepcopy`` of ``obj`` in which the objects in ``shared`` (and everything already in
    ``memo``) are referenced, not copied. For ``__deepcopy__`` of modules with frozen parts."""
    for item in shared:
        if item is not None:
            memo.setdefault(id(item), item)
    clone = obj.__class__.__new__(obj.__class__)
    memo[id(obj)] = clone
    for key, value in obj.__dict__.items():
        setattr(clone, key, copy.deepcopy(value, memo))
    return clone


class Tower(nn.Module):
    """A frozen encoder with one mixture-of-experts slot per block.

    Args:
        stem: ``inputs -> (x, ctx)``.
        blocks: frozen blocks, each ``(x, ctx) -> (y, h)`` where ``y`` is the block output without
            adapter and ``h`` the tensor the adapter reads (same layout the expert factory expects).
        head: ``(x, ctx) -> feature``, shape ``(B, output_dim)``.
        adapter_width: channel/feature width of ``h`` (the width experts are built for).
        output_dim: width of the tower's output feature.
        expert_factory: builds one expert of the right kind (linear for transformers, conv for CNNs);
            or one factory per block, for encoders whose blocks differ in shape (a CNN's experts
            need each block's output channels and stride).
        router: router configuration shared by every block.
    """

    def __init__(
        self,
        stem: nn.Module,
        blocks: Sequence[nn.Module],
        head: nn.Module,
        *,
        adapter_width: int | list[int],
        output_dim: int,
        expert_factory: ExpertFactory | list[ExpertFactory],
        router: RouterConfig,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.output_dim = output_dim
        widths = adapter_width if isinstance(adapter_width, list) else [adapter_width] * len(blocks)
        if len(widths) != len(blocks):
            raise ValueError(f"adapter_width: {len(widths)} widths for {len(blocks)} blocks")
        factories = expert_factory if isinstance(expert_factory, list) else [expert_factory] * len(blocks)
        if len(factories) != len(blocks):
            raise ValueError(f"expert_factory: {len(factories)} factories for {len(blocks)} blocks")
        self.adapters = nn.ModuleList(
            MixtureOfExperts(width=w, expert_factory=f, router=router) for w, f in zip(widths, factories)
        )
        for module in (self.stem, self.blocks, self.head):
            module.requires_grad_(False)
        self.runner: FrozenRunner | None = None

    def set_runner(self, runner: FrozenRunner | None) -> None:
        """Runs the frozen pieces on ``runner`` whenever gradients are disabled (``None``: PyTorch)."""
        self.runner = runner

    def __deepcopy__(self, memo: dict[int, object]) -> "Tower":
        # A runner holds engine sessions: copies of a tower share it (the frozen parts never change).
        return deepcopy_sharing(self, memo, [self.runner])

    def _pieces(self) -> tuple[Stem, RunBlock, Head]:
        if self.runner is not None and not torch.is_grad_enabled():
            r = self.runner
            return r.stem, (lambda i, x, ctx: r.block(i, x, ctx)), r.head
        return self.stem, (lambda i, x, ctx: self.blocks[i](x, ctx)), self.head

    def frozen_modules(self) -> list[nn.Module]:
        """The pieces that never train (and that ``export/`` turns into segments), in order."""
        return [self.stem, *self.blocks, self.head]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        stem, block, head = self._pieces()
        x, ctx = stem(inputs)
        for i, adapter in enumerate(self.adapters):
            y, h = block(i, x, ctx)
            # A block without experts adds nothing (and h may differ in shape from y in a CNN).
            x = y + adapter(h) if adapter.n_experts else y
        feature: torch.Tensor = head(x, ctx)
        return feature

    def frozen_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """The frozen encoder's own output, as if no experts were attached: ``(B, output_dim)``."""
        stem, block, head = self._pieces()
        x, ctx = stem(inputs)
        for i in range(len(self.adapters)):
            x, _ = block(i, x, ctx)
        feature: torch.Tensor = head(x, ctx)
        return feature

    def frozen_tokens(self, inputs: torch.Tensor) -> torch.Tensor:
        """The frozen encoder's spatial tokens before pooling, as if no experts were attached:
        ``(B, P, output_dim)`` (the head's ``tokens``: a CNN's feature map locations, a ViT's patches)."""
        stem, block, _ = self._pieces()
        x, ctx = stem(inputs)
        for i in range(len(self.adapters)):
            x, _ = block(i, x, ctx)
        tokens_of = cast(Head, self.head.tokens)  # a ``tokens(x, ctx)`` method beside ``forward``
        return tokens_of(x, ctx)

    def routing_weights(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """Per-block gate weights ``(B, n_experts)`` for ``inputs`` (for inspection and tests)."""
        stem, block, _ = self._pieces()
        x, ctx = stem(inputs)
        gates = []
        for i, adapter in enumerate(self.adapters):
            y, h = block(i, x, ctx)
            delta, g = adapter(h, return_gates=True)
            gates.append(g)
            x = y + delta if adapter.n_experts else y
        return gates

    # Expert bookkeeping, forwarded to every block's mixture.
    @property
    def mixtures(self) -> list[MixtureOfExperts]:
        """``adapters`` with their type: one mixture of experts per block."""
        return [cast(MixtureOfExperts, adapter) for adapter in self.adapters]

    def add_task_experts(self, task_key: str, n_experts: int) -> None:
        for adapter in self.mixtures:
            adapter.add_task(task_key, n_experts)

    def freeze_task_experts(self, task_key: str) -> None:
        for adapter in self.mixtures:
            adapter.freeze_task(task_key)

    @property
    def expert_tasks(self) -> list[str]:
        return list(self.mixtures[0].task_keys) if len(self.adapters) else []
