"""What the daemon's build children share (``python -m export.compiled``, ``python -m export.base``,
``python -m export.int8``).

The daemon runs each build in a child process (``service/compiling.py``): niced, so that Classify
keeps the cores it needs, and tied to the daemon, so that a daemon killed with -9 leaves no orphan
behind. Their files are written synced, the one marking a folder whole last.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path


def add_child_arguments(parser: argparse.ArgumentParser) -> None:
    """``--threads``, ``--nice`` and ``--parent-pid``."""
    parser.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: PyTorch's)")
    parser.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority by this much")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="exit as soon as this process is gone (a daemon killed while building)")


def apply_child_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser, pytorch: bool = True) -> None:
    """Applies what :func:`add_child_arguments` parsed (a bad ``--threads`` is a usage error);
    ``pytorch=False``: a child that never imports PyTorch reads ``args.threads`` itself."""
    if args.nice:
        os.nice(args.nice)
    if args.parent_pid is not None:
        exit_with_parent(args.parent_pid)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads: must be >= 1, got {args.threads}")
        if pytorch:
            import torch

            torch.set_num_threads(args.threads)


def exit_with_parent(pid: int) -> None:
    """Ends this process (exit 3) within a second of process ``pid`` ending: a daemon killed with -9
    cannot stop the build it started, and nobody would read what it writes."""

    def watch() -> None:
        while os.getppid() == pid:
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
