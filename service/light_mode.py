"""Whether the daemon runs light: Classify from a process without PyTorch, learning in a child.

    light, why = runs_light(config.server)   # (True, "lite + mcil, served as its head, learning on the CPU")

``server.light`` says it:

- ``null`` (the default): light wherever the configuration can be served so, which is the default
  configuration on a host without a GPU. Not light, and the start-up log says why, when the preset's
  base does not hold its audio encoder (``tiny``, ``audioclip``), when the strategy's versions are not
  served as their head (``cign``, ``mmcl``), when ``server.compiled`` is off, or when the learner
  would train on a GPU (``server.device`` names one, or is ``auto`` where PyTorch sees one): a
  light daemon's learner trains on the CPU, and a GPU host keeps its GPU for learning.
- ``true`` (``--light``): light, and a configuration that cannot be is refused by name (also
  ``server.device: cuda``, which a light daemon's learner would not train on).
- ``false``: one process learns and serves.

service/light.py is the light daemon itself; this module only decides, without importing PyTorch
(the serving process never does).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from service.errors import ConfigError

if TYPE_CHECKING:
    from service.config import ServerConfig

log = logging.getLogger(__name__)

PROBE_SECONDS = 120.0
LIGHT_PRESETS = ("lite",)
"""Presets whose base holds every encoder, so that a version answers without PyTorch."""
HEAD_STRATEGIES = ("mcil", "ranpac", "simplecil")
"""Strategies whose versions are served as their head over a base (a statistics head over the frozen
features; tests/service/test_light.py holds this list to the strategies themselves)."""


def light_problem(server: "ServerConfig") -> ConfigError | None:
    """Why ``server`` cannot be served light, as the error naming the field; None if it can."""
    if server.preset not in LIGHT_PRESETS:
        return ConfigError("server.preset", f"light serving serves {list(LIGHT_PRESETS)} only: a "
                           f"{server.preset!r} base does not hold its audio encoder")
    if server.strategy not in HEAD_STRATEGIES:
        return ConfigError("server.strategy", f"light serving serves versions as their head over a base: one of "
                           f"{list(HEAD_STRATEGIES)}, got {server.strategy!r}")
    if not server.compiled:
        return ConfigError("server.compiled", "light serving serves versions as their head over a base: "
                           "server.compiled must be true")
    return None


GPU_DEVICE_FILES = ("nvidia[0-9]*", "dxg", "kfd")
"""Device files under ``/dev`` of a GPU PyTorch could use: NVIDIA's, WSL2's, ROCm's."""


def gpu_visible() -> bool:
    """Whether PyTorch sees a GPU here, as ``server.device: auto`` asks, without importing PyTorch
    into this process: False at once on a host without a GPU device file (``GPU_DEVICE_FILES``) or
    whose ``CUDA_VISIBLE_DEVICES`` hides every GPU; otherwise PyTorch is asked in a child process
    (:func:`pytorch_sees_a_gpu`, seconds, once at start-up)."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return False
    if not any(any(Path("/dev").glob(pattern)) for pattern in GPU_DEVICE_FILES):
        return False
    return pytorch_sees_a_gpu()


def pytorch_sees_a_gpu() -> bool:
    """``torch.cuda.is_available()``, asked in a child process; True when it cannot tell (the daemon
    then runs in one process, where ``server.device: auto`` decides for itself)."""
    probe = "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=PROBE_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("cannot ask PyTorch whether it sees a GPU (%s): running in one process", exc)
        return True
    return done.returncode != 3


def runs_light(server: "ServerConfig") -> tuple[bool, str]:
    """Whether the daemon of ``server`` runs light, and why, in words for the start-up log (module
    docstring). Raises the :class:`ConfigError` of :func:`light_problem` for ``light: true``."""
    if server.light is False:
        return False, "server.light is false"
    problem = light_problem(server)
    if server.light is True:
        if problem is None and server.device.startswith("cuda"):
            problem = ConfigError("server.device", f"a light daemon's learner trains on the CPU, not on "
                                  f"{server.device}: set server.light to false to train there")
        if problem is not None:
            raise problem
        return True, "server.light is true"
    if problem is not None:
        return False, f"{problem.field}: {problem.problem}"
    if server.device.startswith("cuda"):
        return False, f"the learner trains on server.device {server.device}"
    if server.device == "auto" and gpu_visible():
        return False, "the learner trains on the GPU PyTorch sees here (server.device auto)"
    return True, f"{server.preset} + {server.strategy}, served as its head, learning on the CPU"
