"""Segments on ONNX Runtime: one ``InferenceSession`` per segment, tensors shared with PyTorch.

Inputs and outputs are bound by device pointer (IO binding): ONNX Runtime reads the PyTorch input
tensors in place and writes into PyTorch tensors allocated here, whose shapes come from the manifest
(``batch`` and ``sequence`` resolved from the inputs). No NumPy copies on CPU, no host round trip on
CUDA. ``io_binding=False`` switches to ``session.run`` with NumPy arrays (for comparison only).

Threads: between two segments the experts run in PyTorch, which has its own OpenMP pool. By default
a segment runs on the calling thread alone (``threads=1``: ONNX Runtime keeps no pool), which was
fastest in the measurements; a larger pool never spins while it waits (``spinning=False``):
spinning workers keep the cores busy when PyTorch needs them, and slowed everything timed after
them. See docs/export.md and docs/benchmarks.md for the measurements behind these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.errors import RunnerUnavailableError
from export.manifest import SegmentEntry

PROVIDERS = {
    "onnxruntime": ("CPUExecutionProvider",),
    "onnxruntime-cuda": ("CUDAExecutionProvider",),
    "onnxruntime-tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider"),
}
"""Execution providers per runner kind, in ONNX Runtime's order of preference."""

_TORCH_DTYPES = {
    "tensor(float)": torch.float32,
    "tensor(float16)": torch.float16,
    "tensor(int64)": torch.int64,
    "tensor(int32)": torch.int32,
    "tensor(bool)": torch.bool,
}
_NUMPY_DTYPES: dict[torch.dtype, Any] = {
    torch.float32: np.float32,
    torch.float16: np.float16,
    torch.int64: np.int64,
    torch.int32: np.int32,
    torch.bool: np.bool_,
}
_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class OrtSettings:
    """How sessions are created. ``threads``: intra-op threads (1: the calling thread only)."""

    threads: int = 1
    spinning: bool = False
    io_binding: bool = True
    optimization: str = "all"

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads: must be >= 1, got {self.threads}")
        if self.optimization not in _LEVELS:
            raise ValueError(f"optimization: must be one of {_LEVELS}, got {self.optimization!r}")


def check_available(kind: str) -> None:
    """Raises :class:`RunnerUnavailableError` naming what is missing for ``kind``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RunnerUnavailableError(kind, "the onnxruntime package is not installed") from None
    if kind not in PROVIDERS:
        raise ValueError(f"kind: {kind!r} is not an ONNX Runtime runner; one of {sorted(PROVIDERS)}")
    wanted = PROVIDERS[kind][0]
    if wanted not in ort.get_available_providers():
        raise RunnerUnavailableError(
            kind, f"this onnxruntime build has no {wanted} (it has {', '.join(ort.get_available_providers())})"
        )
    if kind != "onnxruntime" and not torch.cuda.is_available():
        raise RunnerUnavailableError(kind, "no CUDA GPU is visible to PyTorch")


class OrtSegment:
    """One exported segment on one ONNX Runtime session: ``segment(*inputs) -> tuple of outputs``.

    Outputs are float32 PyTorch tensors (cast from float16 for ``fp16`` files) on the device the
    session runs on; inputs may come from any device and are moved there.
    """

    def __init__(self, path: Path, entry: SegmentEntry, kind: str, settings: OrtSettings | None = None) -> None:
        import onnxruntime as ort

        check_available(kind)
        self.entry = entry
        self.settings = settings or OrtSettings()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads = self.settings.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.settings.optimization]
        if not self.settings.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = [*PROVIDERS[kind], "CPUExecutionProvider"] if kind != "onnxruntime" else list(PROVIDERS[kind])
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        if kind != "onnxruntime" and PROVIDERS[kind][0] not in self.session.get_providers():
            raise RunnerUnavailableError(kind, f"{PROVIDERS[kind][0]} did not load (session runs on "
                                               f"{self.session.get_providers()})")
        self.device = torch.device("cuda", torch.cuda.current_device()) if kind != "onnxruntime" else torch.device("cpu")
        self._device_type = self.device.type
        self._device_id = self.device.index or 0
        self._input_dtypes = [_TORCH_DTYPES[i.type] for i in self.session.get_inputs()]
        self._output_dtypes = [_TORCH_DTYPES[o.type] for o in self.session.get_outputs()]
        known = {d for spec in entry.inputs for d in spec.shape if isinstance(d, str)}
        # Outputs can be preallocated when every named output dimension is also an input dimension.
        self._bind_outputs = all(d in known for spec in entry.outputs for d in spec.shape if isinstance(d, str))
        names = tuple(i.name for i in self.session.get_inputs())
        if names != entry.input_names:
            raise RunnerUnavailableError(kind, f"{path.name} inputs {names} differ from the manifest's {entry.input_names}")

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.entry.inputs):
            raise ValueError(f"{self.entry.name}: expected {len(self.entry.inputs)} inputs, got {len(inputs)}")
        inputs = tuple(
            t.to(self.device, dtype, non_blocking=True).contiguous() for t, dtype in zip(inputs, self._input_dtypes)
        )
        sizes = self._dynamic_sizes(inputs)
        if not (self.settings.io_binding and self._bind_outputs):
            return self._run_numpy(inputs)
        binding = self.session.io_binding()
        for spec, t in zip(self.entry.inputs, inputs):
            binding.bind_input(spec.name, self._device_type, self._device_id, _NUMPY_DTYPES[t.dtype],
                               tuple(t.shape), t.data_ptr())
        outputs = []
        for spec, dtype in zip(self.entry.outputs, self._output_dtypes):
            shape = tuple(sizes[d] if isinstance(d, str) else d for d in spec.shape)
            out = torch.empty(shape, dtype=dtype, device=self.device)
            binding.bind_output(spec.name, self._device_type, self._device_id, _NUMPY_DTYPES[dtype], shape,
                                out.data_ptr())
            outputs.append(out)
        if self._device_type == "cuda":
            torch.cuda.current_stream().synchronize()  # the inputs are written before the session reads them
        self.session.run_with_iobinding(binding)
        return tuple(o.float() if o.dtype == torch.float16 else o for o in outputs)

    def _run_numpy(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        feeds = {spec.name: t.cpu().numpy() for spec, t in zip(self.entry.inputs, inputs)}
        results = self.session.run(list(self.entry.output_names), feeds)
        outs = (torch.from_numpy(np.asarray(r)).to(self.device) for r in results)
        return tuple(o.float() if o.dtype == torch.float16 else o for o in outs)

    def _dynamic_sizes(self, inputs: tuple[torch.Tensor, ...]) -> dict[str, int]:
        """Binds the named dimensions (``batch``, ``sequence``) and checks the fixed ones."""
        sizes: dict[str, int] = {}
        for spec, t in zip(self.entry.inputs, inputs):
            if t.dim() != len(spec.shape):
                raise ValueError(f"{self.entry.name}.{spec.name}: expected {len(spec.shape)} dimensions, got shape "
                                 f"{tuple(t.shape)}")
            for axis, (want, got) in enumerate(zip(spec.shape, t.shape)):
                if isinstance(want, str):
                    if sizes.setdefault(want, int(got)) != got:
                        raise ValueError(f"{self.entry.name}.{spec.name}: dimension {want!r} is {got} here and "
                                         f"{sizes[want]} in another input")
                elif want != got:
                    raise ValueError(f"{self.entry.name}.{spec.name}: dimension {axis} must be {want}, got {got}")
        return sizes
