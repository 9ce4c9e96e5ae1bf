"""ONNX Runtime sessions on the CPU, every one allocating from one arena per process.

    session = cpu_session(Path("image.onnx"), threads=2)
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnxruntime

_SHARED_ARENA = threading.Lock()
_arena_registered = False


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


def cpu_session(model: bytes | Path, threads: int) -> "onnxruntime.InferenceSession":
    """A CPU session on ``threads`` intra-op threads that sleep between calls (no spinning), using the
    process's shared arena (:func:`_shared_arena`)."""
    import onnxruntime as ort

    _shared_arena()
    options = ort.SessionOptions()
    options.add_session_config_entry("session.use_env_allocators", "1")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
