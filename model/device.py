"""Where a learner computes, as the user names it: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    check_device_name("cuda:1", "server.device")   # the spelling only; imports nothing heavy
    resolve_device("auto")                         # cuda:0 where PyTorch sees a CUDA GPU, else cpu

``auto`` is the default of everything a user runs: a GPU host trains and serves on its GPU, a
machine without one on its CPUs, with no setting to change. Naming ``cuda`` where PyTorch sees no
CUDA GPU is an error, not a silent fall back to the CPU.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from model.errors import InvalidInputError

if TYPE_CHECKING:
    import torch

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(name: str, field: str = "device") -> None:
    """Raises :class:`InvalidInputError` naming ``field`` unless ``name`` is one of :data:`DEVICE_NAMES`."""
    if not isinstance(name, str) or not _PATTERN.fullmatch(name):
        raise InvalidInputError(field, f"must be {DEVICE_NAMES}, got {name!r}")


def resolve_device(name: str, field: str = "device") -> "torch.device":
    """The device ``name`` stands for on this machine; raises :class:`InvalidInputError` naming
    ``field`` for a bad name or a CUDA device that PyTorch cannot see."""
    import torch

    check_device_name(name, field)
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InvalidInputError(field, f"{name!r} asked for, but PyTorch sees no CUDA GPU here "
                                       f"(torch {torch.__version__}); use cpu or auto")
    device = torch.device(name)
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise InvalidInputError(field, f"{name!r} asked for, but PyTorch sees {torch.cuda.device_count()} CUDA GPU(s)")
    return torch.device("cuda", index)


def same_device(a: "torch.device", b: "torch.device") -> bool:
    """Whether ``a`` and ``b`` are one device (``cuda`` is the current GPU, as ``cuda:N`` names it)."""
    import torch

    def index(d: "torch.device") -> int | None:
        return torch.cuda.current_device() if d.type == "cuda" and d.index is None else d.index

    return a.type == b.type and index(a) == index(b)


def describe_device(device: "torch.device") -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H200)``: for logs and reports."""
    import torch

    if device.type != "cuda":
        return str(device)
    return f"{device} ({torch.cuda.get_device_name(device)})"
