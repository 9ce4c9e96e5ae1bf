"""Compiled graphs of the served version, built in the background after each commit.

    <state_dir>/compiled/v0003/   compiled.json, compiled.{av,visual,audio}.onnx   (export/compiled.py)

A commit serves its version at once, on the hybrid path. The compiler then exports that version's
served forward as graphs in a child process (``python -m export.compiled``, reading the committed
version directory: 40-50 s for ``lite`` on 2 cores, ~15 s for ``tiny``; the exporter's memory
and threads never live in the daemon, and PyTorch's exporter is not made for threads), into a
temporary folder renamed into place under ``compiled/``. The daemon loads them, checked against its
own learner (``compiled.json`` names the learner state), and, if that version is still the one
served, swaps in the same version answering from its graphs. At start-up and after a rollback,
graphs on disk are loaded the same way; a version without loadable graphs is compiled again.

The folder is a cache: deleting it costs a compile, never an answer. A kill while writing leaves a
``.tmp-*`` folder that the next sweep removes; folders of versions that no longer exist are removed
too. Compiling never fails a commit or a start: a version that cannot compile (a strategy scoring
with text prototypes, a learner on a GPU, an exporter error) serves the hybrid path, with a log line.

A version whose head reads the frozen encoders' own features (the default ``mcil``) is not compiled
at all: it is served as its head over its *base* (``export/head_version.py``), the frozen image
encoder compiled once per base into ``<state_dir>/bases/<digest>/`` (``python -m export.base``, in
the same kind of child process, the first time a daemon serves a version over that base). Once the
base is on disk, a commit, a rollback or a start serves the version from it within milliseconds
(its head's arrays, checked against the learner), and nothing is compiled again. The head's arrays
are also written to ``<state_dir>/heads/vNNNN/`` (``head.npz``, ``head.json``; a temporary folder
renamed into place), where a serving process without PyTorch reads them (``service/light.py``).
With ``server.base_precision: int8`` a version served over its base is served again, the same head,
over the base's int8 image graph once that is built (``service/int8_serving.py``).
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from service.int8_serving import Int8Graph
from serving.base import engines_ready, trt_folder
from serving.sessions import CPU, Placement

if TYPE_CHECKING:
    from export.compiled import CompiledVersion
    from export.head_version import HeadVersion
    from model.learner import Learner
    from serving.base import BaseGraphs

    Served = CompiledVersion | HeadVersion

log = logging.getLogger(__name__)


def _torch_threads() -> int:
    """PyTorch's intra-op threads (at least 1): what the daemon's ONNX Runtime sessions get too."""
    import torch

    return max(1, int(torch.get_num_threads()))


def compile_problem(learner: "Learner") -> str:
    """Why ``learner`` is not compiled here, or ``""``."""
    try:
        from export.served_graphs import compile_problem as problem
    except ImportError as exc:
        return f"the exporter cannot be imported ({exc})"
    if learner.device.type != "cpu":
        return f"compiled graphs run on the CPU and the learner is on {learner.device}"
    return problem(learner)


def load_compiled(directory: Path, learner: "Learner") -> "CompiledVersion | None":
    """The graphs in ``directory``, or ``None`` (logged) when there are none or they do not load."""
    try:
        from export.compiled import CompiledVersion
        from export.errors import CompileError
    except ImportError as exc:
        log.warning("serving the hybrid path: cannot load compiled graphs (%s)", exc)
        return None
    if not CompiledVersion.present(directory) or compile_problem(learner):
        return None
    try:
        return CompiledVersion.load(directory, learner)
    except CompileError as exc:
        log.warning("compiled graphs in %s do not load: %s", directory, exc)
        return None


COMPILE_TIMEOUT_SECONDS = 1800
"""A compile still running after this long is stopped (lite takes about 40 s on 2 cores)."""

Ready = Callable[[int, "Served"], None]
"""Called from the compiler's thread with ``(version number, its graphs or head)`` once they are ready."""


def head_problem(learner: "Learner", placement: Placement = CPU) -> str:
    """Why ``learner`` is not served as its head over a base on ``placement``, or ``""``
    (``export/head_version.py``)."""
    try:
        from export.head_version import head_problem as problem
    except ImportError as exc:
        return f"the exporter cannot be imported ({exc})"
    return problem(learner, placement.on_gpu)


class Compiler:
    """One background thread compiling the versions it is given, newest first (module docstring).

    ``command_args``: extra arguments for the child processes (the weight files a preset needs,
    ``--weights clip=...``). ``bases``: where bases are kept (``<state_dir>/bases``); ``preset``: the
    preset a base is built from; ``precision``: int8 asks for the base's int8 image graph;
    ``placement``: where a base's graphs and the heads over it run (``server.base_device``)."""

    def __init__(self, root: Path, on_ready: Ready, command_args: Sequence[str] = (), *,
                 bases: Path | None = None, preset: str = "", precision: str = "fp32",
                 placement: Placement = CPU) -> None:
        self.root = root
        self.placement = placement
        self.bases = bases if bases is not None else root.parent / "bases"
        self.heads = root.parent / "heads"
        self.held_out = root.parent / "held_out"
        self.preset = preset
        self.int8 = Int8Graph(self.bases, self.held_out, precision == "int8", build=self._build_int8,
                              threads=_torch_threads)
        self._on_ready = on_ready
        self._command_args = list(command_args)
        self._queue: "queue.Queue[tuple[int, Path, Learner] | None]" = queue.Queue()
        self._closed = threading.Event()
        self._child_lock = threading.Lock()  # close() and the start of a child never interleave
        self._child: subprocess.Popen[bytes] | None = None
        self._base: "BaseGraphs | None" = None  # the base last loaded (one preset per daemon)
        self._digests: dict[int, str] = {}  # id of a backbone's first frozen image module -> its base digest
        self._engines_failed: set[str] = set()  # bases whose TensorRT engines failed to build in this run
        self._thread = threading.Thread(target=self._run, name="mcil-compiler", daemon=True)
        self._thread.start()

    def directory(self, number: int) -> Path:
        return self.root / f"v{number:04d}"

    def load(self, number: int, learner: "Learner") -> "Served | None":
        """Version ``number`` ready to serve without compiling: its head over a base already on disk,
        or its graphs from disk, if they are ``learner``'s."""
        if not head_problem(learner, self.placement):
            base = self._base_on_disk(learner)
            return self._head_version(number, learner, base) if base is not None else None
        return load_compiled(self.directory(number), learner)

    def submit(self, number: int, version_dir: Path, learner: "Learner") -> None:
        """Compile version ``number`` (saved in ``version_dir``, served by ``learner``) when the thread
        is free; an older request still waiting is dropped: only the served version is worth it."""
        problem = head_problem(learner, self.placement) and compile_problem(learner)  # "": one of the two serves
        if problem:
            log.info("version %d serves the hybrid path, not compiled graphs: %s", number, problem)
            return
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put((number, version_dir, learner))

    def sweep(self, versions: Iterable[int], *, leftovers: bool = False) -> None:
        """Removes the graphs of versions not in ``versions`` and, with ``leftovers`` (at start-up,
        before anything is compiled), the temporary folders a kill left behind (bases' too)."""
        keep = {self.directory(n).name for n in versions}
        if leftovers and self.bases.is_dir():
            for path in self.bases.iterdir():
                if path.name.startswith(".tmp-"):
                    shutil.rmtree(path, ignore_errors=True)
        if self.heads.is_dir():
            for path in self.heads.iterdir():
                if (path.name.startswith(".tmp-") and leftovers) or (not path.name.startswith(".tmp-")
                                                                   and path.name not in keep):
                    shutil.rmtree(path, ignore_errors=True)
        if not self.root.is_dir():
            return
        for path in self.root.iterdir():
            stale = path.name.startswith(".tmp-") if leftovers else False
            if stale or (path.is_dir() and not path.name.startswith(".tmp-") and path.name not in keep):
                shutil.rmtree(path, ignore_errors=True)

    def close(self, timeout: float = 5.0) -> None:
        """Stops taking work and ends a compile under way (its child process is killed)."""
        with self._child_lock:
            self._closed.set()
            child = self._child
        self._queue.put(None)
        if child is not None and child.poll() is None:
            child.kill()
        self._thread.join(timeout)

    # -- heads over a base ------------------------------------------------------------------------
    def _build_int8(self, command: list[str], parent: Path, name: str, what: str) -> bool:
        return self._in_child(command, parent, name, what, weights=False,
                              instead="keeps fp32 image features: building the int8 image graph")

    def _digest(self, learner: "Learner") -> str:
        from export.base import base_digest

        key = id(learner.backbone.image.frozen_modules()[0])  # shared by every copy of the backbone
        if key not in self._digests:
            self._digests[key] = base_digest(learner.backbone)
        return self._digests[key]

    def _base_on_disk(self, learner: "Learner") -> "BaseGraphs | None":
        """The learner's base, loaded (from memory, or from ``bases/<digest>``), or None."""
        from serving.base import BaseGraphs
        from serving.errors import BaseGraphsError

        digest = self._digest(learner)
        if self._base is not None and self._base.digest == digest:
            return self._base
        folder = self.bases / digest
        if not BaseGraphs.present(folder) or not engines_ready(folder, self.placement):
            return None
        try:
            base = BaseGraphs.load(folder, _torch_threads(), digest, self.placement)
        except BaseGraphsError as exc:
            if self.placement.on_gpu and exc.problem.startswith("cannot load"):  # its files check out: the GPU's
                log.warning("the base in %s does not load on %s (%s); versions serve the hybrid path", folder,
                            self.placement.describe(), exc)
                return None
            log.warning("the base in %s does not load (%s); it is built again", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
            return None
        self._base = self.int8.load(base, folder)
        return self._base

    def _head_version(self, number: int, learner: "Learner", base: "BaseGraphs") -> "HeadVersion | None":
        from export.errors import CompileError
        from export.head_version import HeadVersion

        started = time.perf_counter()
        try:
            version = HeadVersion.build(learner, base, self._digest(learner))
        except CompileError as exc:
            log.warning("version %d serves the hybrid path: its head cannot be served over its base: %s",
                        number, exc)
            return None
        log.info("version %d served as its head over base %s (built and checked in %.1f ms)", number,
                 base.digest[:12], 1000 * (time.perf_counter() - started))
        shutil.rmtree(self.directory(number), ignore_errors=True)  # graphs an earlier release compiled for it
        self._write_head(number, version)
        return version

    def _write_head(self, number: int, version: "HeadVersion") -> None:
        """``heads/vNNNN/``, written whole (a temporary folder renamed into place), replacing what was
        there unless it holds the same arrays over the same base."""
        import numpy as np

        from serving.errors import HeadDataError
        from serving.head import ServedHead

        final = self.heads / self.directory(number).name
        try:
            there = ServedHead.load(final) if ServedHead.present(final) else None
        except HeadDataError:
            there = None
        mine, theirs = version.head.arrays(), there.arrays() if there is not None else {}
        if there is not None and (there.base, there.mix) == (version.head.base, version.head.mix) and \
                set(theirs) == set(mine) and all(np.array_equal(theirs[k], v) for k, v in mine.items()):
            return
        tmp = self.heads / f".tmp-{final.name}-{secrets.token_hex(4)}"
        old = self.heads / f".tmp-old-{final.name}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir(parents=True)
            version.head.write(tmp)
            if final.exists():
                final.rename(old)  # a reader finds no head for a moment, never half of one
            tmp.rename(final)
        except OSError as exc:
            log.warning("cannot write the head of version %d for a serving process: %s", number, exc)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)

    def _serve_head(self, number: int, learner: "Learner") -> "HeadVersion | None":
        base = self._base_on_disk(learner)
        if base is None:
            from serving.base import BaseGraphs

            digest = self._digest(learner)
            command = [sys.executable, "-m", "export.base", "--preset", self.preset]
            if not BaseGraphs.present(self.bases / digest) and \
                    not self._in_child(command, self.bases, digest, f"the base of version {number}"):
                return None
            if not engines_ready(self.bases / digest, self.placement):  # TensorRT's, once built
                if digest in self._engines_failed:
                    return None  # tried once in this run; logged then
                engines = trt_folder(self.bases / digest, self.placement.precision)
                command = [sys.executable, "-m", "export.trt_base", "--base", os.fspath(self.bases / digest),
                           "--precision", self.placement.precision, "--device", str(self.placement.device_id)]
                if not self._in_child(command, engines.parent, engines.name, f"version {number}", weights=False,
                                      instead="serves the hybrid path until a restart: building TensorRT engines "
                                              "of its base"):
                    self._engines_failed.add(digest)
                    return None
            base = self._base_on_disk(learner)
            if base is None:
                log.warning("version %d serves the hybrid path: the base built does not load", number)
                return None
        return self._head_version(number, learner, base)

    def _serve_int8(self, number: int, served: "HeadVersion") -> "HeadVersion | None":
        """Version ``number`` over its base's int8 image graph, once it is built; None when it cannot
        be built yet or the compiler closes."""
        if self._closed.is_set():
            return None
        self._base = base = self.int8.build(served.base, number)
        return self._head_version(number, served.learner, base) if base.precision == "int8" else None

    # -- the thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._closed.is_set():
                return
            number, version_dir, learner = item
            try:
                ready: Served | None
                if not head_problem(learner, self.placement):
                    ready = self._serve_head(number, learner)
                else:
                    ready = self._compile(number, version_dir, learner)
                if ready is not None and not self._closed.is_set():
                    self._on_ready(number, ready)
                if ready is not None and self.int8.wants(ready):  # served at once in fp32; int8 follows
                    faster = self._serve_int8(number, ready)
                    if faster is not None and not self._closed.is_set():
                        self._on_ready(number, faster)
            except Exception:  # noqa: BLE001 - a compile must never take the daemon down
                log.exception("compiling version %d failed; it serves the hybrid path", number)

    def _compile(self, number: int, version_dir: Path, learner: "Learner") -> "CompiledVersion | None":
        started = time.perf_counter()
        command = [sys.executable, "-m", "export.compiled", os.fspath(version_dir)]
        if not self._in_child(command, self.root, self.directory(number).name, f"version {number}"):
            return None
        compiled = load_compiled(self.directory(number), learner)
        if compiled is not None:
            log.info("compiled version %d into %d graphs in %.1f s", number, len(compiled.sessions),
                     time.perf_counter() - started)
        return compiled

    def _in_child(self, command: list[str], parent: Path, name: str, what: str, weights: bool = True,
                  instead: str = "serves the hybrid path: compiling") -> bool:
        """Runs ``command --out <tmp>`` niced, tied to this process, and renames ``tmp`` to
        ``parent/name``; False (logged: "<what> <instead> failed ...") when it fails, times out or the
        compiler closes. ``weights``: pass the weight files a preset needs (children that build a backbone)."""
        parent.mkdir(parents=True, exist_ok=True)
        final = parent / name
        tmp = parent / f".tmp-{name}-{secrets.token_hex(4)}"
        # Niced, so that Classify keeps the cores it needs while the graphs are built; tied to this
        # process, so that a daemon killed mid-compile leaves no orphan behind.
        command = [*command, "--out", os.fspath(tmp), "--threads", str(_torch_threads()),
                   "--nice", "10", "--parent-pid", str(os.getpid()), *(self._command_args if weights else [])]
        try:
            with self._child_lock:
                if self._closed.is_set():
                    return False
                self._child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                output, _ = self._child.communicate(timeout=COMPILE_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.communicate()
                log.warning("%s %s took over %d s and was stopped", what, instead, COMPILE_TIMEOUT_SECONDS)
                return False
            if self._closed.is_set():
                return False
            if self._child.returncode != 0:
                tail = output.decode(errors="replace").strip().splitlines()[-3:]
                log.warning("%s %s failed (exit %s): %s", what, instead, self._child.returncode, " | ".join(tail))
                return False
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            return True
        finally:
            self._child = None
            shutil.rmtree(tmp, ignore_errors=True)
