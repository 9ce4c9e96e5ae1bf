"""The base's int8 image graph, for a daemon with ``server.base_precision: int8`` (``export/int8.py``).

    int8 = Int8Graph(bases, held_out, wanted=True, build=run_child)
    base = int8.load(base, folder)          # over int8 when it is on disk (a damaged one is removed)
    base = int8.build(base, version)        # built once enough held-out pictures are kept
    upgrades(served, ready)                 # ready: the same version over int8 instead of fp32

The compiler (``service/compiling.py``) serves a version over its fp32 base at once, then asks for
the int8 graph: it is built, in a niced child process (``python -m export.int8``), once the held-out
pictures kept reach ``export.int8.MIN_EXAMPLES``; a build that fails is tried again only when more
pictures are kept. It lives in ``<state_dir>/bases/<digest>.int8/`` and is never rebuilt by itself.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeGuard

from serving.base import INT8_SUFFIX

if TYPE_CHECKING:
    from export.compiled import CompiledVersion
    from export.head_version import HeadVersion
    from serving.base import BaseGraphs

log = logging.getLogger(__name__)

Build = Callable[[list[str], Path, str, str], bool]
"""``build(command, parent, name, what) -> ok``: runs ``command --out <tmp>`` in a child and renames
``tmp`` to ``parent/name`` (the compiler's ``_in_child``)."""


def upgrades(served: "CompiledVersion | HeadVersion", ready: "CompiledVersion | HeadVersion") -> bool:
    """Whether ``ready`` is the version ``served`` is, over its base's int8 image graph instead of fp32."""
    from export.head_version import HeadVersion

    return isinstance(served, HeadVersion) and isinstance(ready, HeadVersion) and \
        served.base.precision != "int8" and ready.base.precision == "int8"


class Int8Graph:
    """Loads or builds a base's int8 image graph when ``wanted`` (module docstring)."""

    def __init__(self, bases: Path, held_out: Path, wanted: bool, build: Build, threads: Callable[[], int]) -> None:
        self.bases = bases
        self.held_out = held_out
        self.wanted = wanted
        self._build = build
        self._threads = threads
        self._tried_with = -1  # held-out pictures there were when a build last failed

    def wants(self, served: "CompiledVersion | HeadVersion") -> "TypeGuard[HeadVersion]":
        """Whether ``served`` is a head over a base's fp32 image graph that int8 would serve instead."""
        from export.head_version import HeadVersion

        return self.wanted and isinstance(served, HeadVersion) and served.base.precision != "int8"

    def load(self, base: "BaseGraphs", folder: Path) -> "BaseGraphs":
        """``base`` (kept in ``folder``) over its int8 image graph when wanted and on disk; a damaged
        one is removed, to be built again."""
        from serving.base import int8_folder
        from serving.errors import BaseGraphsError

        graph = int8_folder(folder)
        if not self.wanted or not graph.is_dir():
            return base
        try:
            return base.with_int8(graph, self._threads())
        except BaseGraphsError as exc:
            log.warning("the int8 image graph in %s does not load (%s); it is built again", graph, exc)
            shutil.rmtree(graph, ignore_errors=True)
            return base

    def build(self, base: "BaseGraphs", number: int) -> "BaseGraphs":
        """``base`` over its int8 image graph, built now if enough held-out pictures are kept; ``base``
        as it was otherwise (logged)."""
        from export.int8 import MIN_EXAMPLES, count_pictures

        pictures = count_pictures(self.held_out)
        if pictures < MIN_EXAMPLES:
            log.info("version %d serves fp32 image features: int8 is calibrated on at least %d held-out "
                     "pictures, %d kept so far", number, MIN_EXAMPLES, pictures)
            return base
        if pictures <= self._tried_with:
            return base
        folder = self.bases / base.digest
        command = [sys.executable, "-m", "export.int8", "--base", os.fspath(folder), "--held-out",
                   os.fspath(self.held_out)]
        if not self._build(command, self.bases, folder.name + INT8_SUFFIX, f"version {number}"):
            self._tried_with = pictures
            return base
        built = self.load(base, folder)
        log.info("base %s computes image features in %s from now on", base.digest[:12], built.precision)
        return built
