"""The frozen backbone's runner, from ``server.runner``: what computes a learner's frozen parts.

    in_use = attach_runner(learner, config.server)      # "pytorch", "onnxruntime", ... (after any fallback)

A learner computes its frozen encoders with PyTorch unless the configuration names a runner of
``export/runners.py`` (ONNX Runtime on the CPU or a GPU, TensorRT); that package is imported only
then, and its errors become configuration errors naming ``server.runner``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.config import ServerConfig
from service.errors import ConfigError

if TYPE_CHECKING:
    from model.learner import Learner


def attach_runner(learner: "Learner", server: ServerConfig) -> str:
    """The hook that puts the frozen parts of ``learner``'s backbone on the configured runner; returns
    the runner actually in use (``server.runner``, or a slower one it fell back to).

    ``pytorch`` leaves the learner as it is. The others come from :func:`export.runners.attach_runner`,
    imported only then; the first use exports the frozen segments (minutes for ``lite``), later uses
    find them in ``server.runner_artifacts_dir`` (default: the export cache).
    """
    if server.runner == "pytorch":
        return "pytorch"
    try:
        from export.errors import ExportError
        from export.runners import attach_runner as attach
    except ImportError as exc:
        raise ConfigError("server.runner", f"{server.runner!r} needs the export extra "
                          f"(pip install 'mcil-daemon[export]'): {exc}") from None
    try:
        return attach(learner.backbone, server.runner, server.runner_artifacts_dir,
                      fallback=server.runner_fallback, precision=server.runner_precision)
    except (ExportError, ValueError) as exc:
        raise ConfigError("server.runner", str(exc)) from None
