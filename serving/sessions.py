"""ONNX Runtime sessions, on the CPU or on a GPU, for a base's graphs and a head.

    session = cpu_session(Path("image.onnx"), threads=2)
    where = Placement.parse("tensorrt:0", "server.base_device").with_cache(folder)
    where.check_available("server.base_device")            # PlacementError naming what is missing
    session = placed_session(Path("image.onnx"), threads=2, placement=where)

On the CPU every session allocates from one arena per process (:func:`_shared_arena`). On a GPU a
session runs on ONNX Runtime's CUDA provider (``cuda``) or its TensorRT provider (``tensorrt``: the
graph, or the parts of it TensorRT takes, compiled into TensorRT engines kept in ``cache``, the rest
on CUDA). Both need the ``onnxruntime-gpu`` package in place of ``onnxruntime`` (docs/export.md, "A
base on the GPU"); neither needs PyTorch.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.errors import PlacementError

if TYPE_CHECKING:
    import onnxruntime

_SHARED_ARENA = threading.Lock()
_arena_registered = False

KINDS = ("cpu", "cuda", "tensorrt")
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
TRT_PRECISIONS = ("fp32", "fp16")
TRT_WORKSPACE_BYTES = 2 << 30


@dataclass(frozen=True)
class Placement:
    """Where a session runs: ``kind`` (cpu, cuda, tensorrt) on GPU ``device_id``; for tensorrt the
    engines' ``precision`` and the folder that caches them (``None``: engines are built anew by each
    process, which can take minutes)."""

    kind: str = "cpu"
    device_id: int = 0
    precision: str = "fp32"
    cache: Path | None = None
    # tensorrt: one input's (name, min, opt, max) shapes, so that one engine covers every batch served
    profile: tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PlacementError("kind", f"one of {list(KINDS)}, got {self.kind!r}")
        if self.device_id < 0:
            raise PlacementError("device_id", f"a GPU number is >= 0, got {self.device_id}")
        if self.precision not in TRT_PRECISIONS or (self.precision != "fp32" and self.kind != "tensorrt"):
            raise PlacementError("precision", f"fp32, or fp16 with tensorrt; got {self.precision!r} on {self.kind}")

    @classmethod
    def parse(cls, text: str, field: str, precision: str = "fp32") -> "Placement":
        """``cpu``, ``cuda[:N]`` or ``tensorrt[:N]``; errors name ``field``."""
        kind, colon, number = str(text).partition(":")
        if kind not in KINDS or (kind == "cpu" and colon):
            raise PlacementError(field, f"must be cpu, cuda[:N] or tensorrt[:N], got {text!r}")
        if colon and not re.fullmatch(r"[0-9]+", number):
            raise PlacementError(field, f"the GPU number must be a non-negative integer, got {number!r}")
        try:
            return cls(kind, int(number or 0), precision)
        except PlacementError as exc:
            raise PlacementError(field, exc.problem) from None

    @property
    def on_gpu(self) -> bool:
        return self.kind != "cpu"

    @property
    def ort_device(self) -> tuple[str, int]:
        """Where ONNX Runtime keeps this placement's tensors: ``("cuda", N)`` or ``("cpu", 0)``."""
        return ("cuda", self.device_id) if self.on_gpu else ("cpu", 0)

    def with_cache(self, folder: Path | None) -> "Placement":
        return replace(self, cache=folder)

    def on_cuda(self) -> "Placement":
        """The same GPU through ONNX Runtime's CUDA provider: for graphs TensorRT is not given (the
        audio graphs, whose shapes vary with each clip, and a head's float64 arithmetic)."""
        return Placement("cuda", self.device_id) if self.on_gpu else self

    def describe(self) -> str:
        if self.kind == "cpu":
            return "cpu"
        return f"{self.kind}:{self.device_id}" + (f" {self.precision}" if self.kind == "tensorrt" else "")

    def providers(self) -> list[Any]:
        """ONNX Runtime's providers for this placement, first choice first (the CPU last on a GPU, for
        the few operators neither GPU provider has)."""
        if self.kind == "cpu":
            return [PROVIDERS["cpu"]]
        # cuDNN picks convolution algorithms by heuristic: the exhaustive default benchmarks every new input
        # shape, and the audio graphs' shapes change with each clip; the memory pool grows by what is
        # asked, not to the next power of two, beside a learner that may share the GPU
        cuda = (PROVIDERS["cuda"], {"device_id": str(self.device_id), "cudnn_conv_algo_search": "HEURISTIC",
                                    "arena_extend_strategy": "kSameAsRequested"})
        if self.kind == "cuda":
            return [cuda, PROVIDERS["cpu"]]
        options = {"device_id": str(self.device_id), "trt_fp16_enable": str(self.precision == "fp16"),
                   "trt_max_workspace_size": str(TRT_WORKSPACE_BYTES)}
        if self.cache is not None:
            cache = os.fspath(self.cache)
            options |= {"trt_engine_cache_enable": "True", "trt_engine_cache_path": cache,
                        "trt_timing_cache_enable": "True", "trt_timing_cache_path": cache}
        if self.profile is not None:
            name, *shapes = self.profile
            for key, shape in zip(("min", "opt", "max"), shapes):
                options[f"trt_profile_{key}_shapes"] = f"{name}:" + "x".join(str(d) for d in shape)
        return [(PROVIDERS["tensorrt"], options), cuda, PROVIDERS["cpu"]]

    def check_available(self, field: str) -> None:
        """Raises :class:`PlacementError` naming ``field`` when this ONNX Runtime cannot run here: its
        providers are not built in, or a session on them does not start (a CUDA, cuDNN or TensorRT
        library that does not load: ONNX Runtime would fall back to the CPU without a word)."""
        import onnxruntime as ort

        if not self.on_gpu:
            return
        have = ort.get_available_providers()
        wanted = [PROVIDERS["cuda"]] + ([PROVIDERS["tensorrt"]] if self.kind == "tensorrt" else [])
        missing = [p for p in wanted if p not in have]
        if missing:
            raise PlacementError(field, f"{self.kind} needs ONNX Runtime's {' and '.join(missing)}; this onnxruntime "
                                 f"{ort.__version__} offers {', '.join(have)} (install onnxruntime-gpu in place of "
                                 "onnxruntime, and TensorRT 10 for tensorrt: docs/export.md)")
        try:
            placed_session(_probe_graph(), 1, replace(self, cache=None, profile=None))
        except PlacementError as exc:
            raise PlacementError(field, exc.problem) from None


CPU = Placement()


def _shared_arena() -> None:
    """Registers, once per process, the CPU memory arena every session allocates from.

    Each session would otherwise keep its own arena at the peak of its largest batch; shared, the
    graphs of a version (and of the next one, while both are loaded) hold one peak between them
    (lite, the av and visual graphs run at batch 32: 498 MiB instead of 718, the same speed)."""
    global _arena_registered
    import onnxruntime as ort

    with _SHARED_ARENA:
        if not _arena_registered:
            memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, -1, -1, -1))
            _arena_registered = True


def _options(threads: int) -> "onnxruntime.SessionOptions":
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def cpu_session(model: bytes | Path, threads: int) -> "onnxruntime.InferenceSession":
    """A CPU session on ``threads`` intra-op threads that sleep between calls (no spinning), using the
    process's shared arena (:func:`_shared_arena`)."""
    import onnxruntime as ort

    _shared_arena()
    options = _options(threads)
    options.add_session_config_entry("session.use_env_allocators", "1")
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, options, providers=[PROVIDERS["cpu"]])


def placed_session(model: bytes | Path, threads: int, placement: Placement = CPU) -> "onnxruntime.InferenceSession":
    """A session of ``model`` where ``placement`` says; on the CPU, :func:`cpu_session`. ``threads``
    is for the operators left on the CPU."""
    import onnxruntime as ort

    if not placement.on_gpu:
        return cpu_session(model, threads)
    if placement.cache is not None:
        placement.cache.mkdir(parents=True, exist_ok=True)
    source = model if isinstance(model, bytes) else os.fspath(model)
    try:
        session = ort.InferenceSession(source, _options(threads), providers=placement.providers())
    except Exception as exc:  # ONNX Runtime's own types
        raise PlacementError("placement", f"no session on {placement.describe()}: {type(exc).__name__}: {exc}") from None
    first = session.get_providers()[0]
    if first != PROVIDERS[placement.kind]:  # ONNX Runtime fell back when the provider did not start
        raise PlacementError("placement", f"{placement.describe()} did not start here (ONNX Runtime fell back to "
                             f"{first}; its log says why: a CUDA, cuDNN or TensorRT library that does not load)")
    return session


def _probe_graph() -> bytes:
    """``y = relu(x)`` on a float32 vector: a session that starts proves the provider loads."""
    from onnx import TensorProto, helper

    vector = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", vector[:1], vector[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())
