"""Whether the daemon runs light: Classify from a process without PyTorch, learning in a child.

    light, why = runs_light(config.server)     # (True, "lite + mcil, served as its head on the CPU")

``server.light`` says it:

- ``null`` (the default): light wherever the configuration can be served so, which is the default
  configuration on a host without a GPU. Not light, and the start-up log says why, when the preset's
  base does not hold its audio encoder (``tiny``, ``audioclip``), when the strategy's versions are not
  served as their head (``cign``, ``mmcl``), when ``server.compiled`` is off, or when the learner
  would train on a GPU (``server.device`` names one, or is ``auto`` on a host that has one): a
  light daemon's learner trains on the CPU, and a GPU host keeps its GPU for learning.
- ``true`` (``--light``): light, and a configuration that cannot be is refused by name.
- ``false``: one process learns and serves.

service/light.py is the light daemon itself; this module only decides, without importing PyTorch
(the serving process never does).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from service.errors import ConfigError

if TYPE_CHECKING:
    from service.config import ServerConfig

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


def cuda_visible() -> bool:
    """Whether this host shows the process an NVIDIA GPU: a ``/dev/nvidiaN`` device file, unless
    ``CUDA_VISIBLE_DEVICES`` hides every GPU. Read from the file system, without loading the CUDA
    driver into this process (which may go on to fork) or importing PyTorch. A GPU whose driver
    libraries are missing counts too: the daemon then runs in one process, as it would with a GPU."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return False
    return any(re.fullmatch(r"nvidia\d+", path.name) for path in Path("/dev").glob("nvidia*"))


def runs_light(server: "ServerConfig") -> tuple[bool, str]:
    """Whether the daemon of ``server`` runs light, and why, in words for the start-up log (module
    docstring). Raises the :class:`ConfigError` of :func:`light_problem` for ``light: true``."""
    if server.light is False:
        return False, "server.light is false"
    problem = light_problem(server)
    if server.light is True:
        if problem is not None:
            raise problem
        return True, "server.light is true"
    if problem is not None:
        return False, f"{problem.field}: {problem.problem}"
    if server.device.startswith("cuda"):
        return False, f"the learner trains on server.device {server.device}"
    if server.device == "auto" and cuda_visible():
        return False, "the learner trains on the GPU this host has (server.device auto)"
    return True, f"{server.preset} + {server.strategy}, served as its head, learning on the CPU"
