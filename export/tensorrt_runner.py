"""Native TensorRT: engines built from the ONNX segments, run on a side CUDA stream.

Written for the TensorRT 10 API and NOT run on the development machines (they have no GPU and no
TensorRT); see docs/export.md. Building (:func:`build_engine`):

- a strongly typed network (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``): precision comes from
  the ONNX types, so the ``fp16`` ONNX files give FP16 engines and no builder precision flags are set;
- one optimisation profile per :class:`~export.engines.Profile` (batch ``min:opt:max``; text
  sequence ``1..max_sequence``);
- a timing cache shared by every engine of the folder (``timing.cache``), loaded before and saved
  after each build;
- ``builder.build_serialized_network``.

Running (:class:`TrtSegment`): one execution context per profile, tensors bound by name with
``set_input_shape``/``set_tensor_address`` to PyTorch tensors' device pointers, and
``execute_async_v3`` on a non-default stream that waits for PyTorch's current stream (and is waited
for by it), so the experts and the engines are ordered without a host synchronisation.

``tensorrt`` is imported only inside functions: importing this module never fails.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from export.engines import DEFAULT_PROFILES, EngineKey, Profile, engine_keys, profile_shapes
from export.engines import ensure_engines as ensure_engine_files
from export.errors import ExportError, RunnerUnavailableError
from export.manifest import Manifest, SegmentEntry

MIN_MAJOR = 10
WORKSPACE_BYTES = 4 << 30


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise RunnerUnavailableError(
            "tensorrt", "the tensorrt Python package is not installed (pip install 'mcil-daemon[gpu]' on a GPU host)"
        ) from None
    return tensorrt


def check_available() -> None:
    """Raises :class:`RunnerUnavailableError` with one line naming what is missing."""
    trt = _import_tensorrt()
    major = int(str(trt.__version__).split(".")[0])
    if major < MIN_MAJOR:
        raise RunnerUnavailableError("tensorrt", f"TensorRT {trt.__version__} found; {MIN_MAJOR} or newer is needed")
    if not torch.cuda.is_available():
        raise RunnerUnavailableError("tensorrt", "no CUDA GPU is visible to PyTorch (torch.cuda.is_available() is False)")


def tensorrt_version() -> str:
    return str(_import_tensorrt().__version__)


def compute_capability(device: int | None = None) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"{major}.{minor}"


def build_engine(onnx_path: Path, entry: SegmentEntry, key: EngineKey, timing_cache: Path) -> bytes:
    """Parses ``onnx_path`` into a strongly typed network and builds a serialized plan."""
    trt = _import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{entry.name}: TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    for profile in key.profiles:
        optimisation = builder.create_optimization_profile()
        for name, (low, opt, high) in profile_shapes(entry, profile).items():
            optimisation.set_shape(name, low, opt, high)
        config.add_optimization_profile(optimisation)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"{entry.name}: TensorRT failed to build an engine from {onnx_path.name}")
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


def ensure_engines(
    manifest: Manifest, folder: Path, *, precision: str = "fp16",
    profiles: tuple[Profile, ...] = DEFAULT_PROFILES, force: bool = False,
) -> dict[str, Path]:
    """Engine plans for every segment of ``manifest``, built or rebuilt where stale."""
    check_available()
    keys = engine_keys(manifest, precision, tensorrt_version(), compute_capability(), profiles)
    plans, _ = ensure_engine_files(manifest, folder, keys, build_engine, force=force)
    return plans


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
             trt.DataType.INT64: torch.int64, trt.DataType.BOOL: torch.bool}
    return table[dtype]


class TrtSegment:
    """One engine: ``segment(*inputs) -> outputs`` on CUDA, float32 outputs (cast from FP16)."""

    def __init__(self, plan: Path, entry: SegmentEntry, profiles: tuple[Profile, ...] = DEFAULT_PROFILES) -> None:
        trt = _import_tensorrt()
        self.entry = entry
        self.profiles = profiles
        self.device = torch.device("cuda", torch.cuda.current_device())
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise RunnerUnavailableError("tensorrt", f"{plan.name} cannot be deserialized by this TensorRT")
        self._lock = threading.Lock()
        self.stream = torch.cuda.Stream(device=self.device)  # type: ignore[no-untyped-call]  # non-default stream
        self.contexts = []
        for i in range(self.engine.num_optimization_profiles):
            context = self.engine.create_execution_context()
            context.set_optimization_profile_async(i, self.stream.cuda_stream)
            self.contexts.append(context)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self.inputs = [n for n in entry.input_names if is_input.get(n)]
        self.outputs = [n for n in entry.output_names if n in is_input and not is_input[n]]
        if len(self.inputs) != len(entry.inputs) or len(self.outputs) != len(entry.outputs):
            raise RunnerUnavailableError("tensorrt", f"{plan.name} tensors {names} differ from the manifest's")

    def _context(self, batch: int) -> Any:
        for profile, context in zip(self.profiles, self.contexts):
            if profile.covers(batch):
                return context
        raise ValueError(f"{self.entry.name}: batch {batch} is outside every engine profile {self.profiles}")

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with self._lock:  # an execution context holds shapes and addresses: one call at a time
            return self._run(inputs)

    def _run(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        context = self._context(int(inputs[0].shape[0]))
        current = torch.cuda.current_stream(self.device)
        bound = []
        for name, t in zip(self.inputs, inputs):
            t = t.to(self.device, self.dtypes[name]).contiguous()
            context.set_input_shape(name, tuple(t.shape))
            context.set_tensor_address(name, t.data_ptr())
            bound.append(t)
        outputs = []
        for name in self.outputs:
            out = torch.empty(tuple(context.get_tensor_shape(name)), dtype=self.dtypes[name], device=self.device)
            context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        self.stream.wait_stream(current)  # inputs written on PyTorch's stream
        for t in (*bound, *outputs):
            t.record_stream(self.stream)  # not reused by the caching allocator while the engine runs
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise ExportError(f"{self.entry.name}: TensorRT execution failed")
        current.wait_stream(self.stream)  # PyTorch reads the outputs only after the engine wrote them
        return tuple(o.float() if o.dtype == torch.float16 else o for o in outputs)
