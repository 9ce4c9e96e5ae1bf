"""A real daemon in a child process (``python -m service serve``), to be killed and restarted.

The chaos campaign and the crash tests use it: the daemon runs exactly as an operator starts it,
on a free loopback port, ``tiny`` preset unless told otherwise, its log in a file (read back to count
tracebacks), and ``MCIL_FAILPOINTS`` armed when a trial wants it to die at a named point.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

from service.client import Client
from service.failpoints import ENV as FAILPOINTS_ENV

REPO = Path(__file__).resolve().parents[2]

FAST_SETTINGS = {
    "learning.epochs": "3", "learning.min_steps": "0", "learning.batch_size": "8",
    "learning.min_examples_per_class": "4", "retention.max_versions": "3", "gate.max_forgetting": "null",
}
"""A task of the tiny preset learns in seconds; retention is small so that pruning happens often."""


class DaemonProcess:
    """``python -m service serve`` on ``state_dir``; ``client`` talks to it once it listens."""

    def __init__(self, state_dir: Path, *, preset: str = "tiny", settings: Mapping[str, str] | None = None,
                 failpoints: str = "", log_path: Path | None = None, start_timeout: float = 180.0) -> None:
        args = [sys.executable, "-m", "service", "serve", "--preset", preset, "--state-dir", str(state_dir),
                "--listen", "127.0.0.1:0", "--metrics-listen", "none", "--log-level", "INFO"]
        for key, value in {**FAST_SETTINGS, **(settings or {})}.items():
            args += ["--set", f"{key}={value}"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", FAILPOINTS_ENV: failpoints}
        self.log_path = log_path or Path(state_dir).with_suffix(".log")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=self._log, env=env)
        self.port = self._read_port(start_timeout)
        self.target = f"127.0.0.1:{self.port}"
        self.client = Client(self.target, timeout=60)

    def _read_port(self, timeout: float) -> int:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if ready:
                line = self.proc.stdout.readline().decode()
                if line.startswith("mcild listening on port "):
                    return int(line.rsplit(" ", 1)[1])
                if not line and self.proc.poll() is not None:
                    break
        self.proc.kill()
        self.proc.wait(30)
        self._log.close()
        raise RuntimeError(f"the daemon did not start; its log: {self.log_path}\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """kill -9, and wait until it is gone."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM (a graceful stop); the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def wait_exit(self, timeout: float) -> bool:
        """Whether the process ended within ``timeout`` seconds (a failpoint fired)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def resident_kib(self) -> int:
        """The daemon's resident memory now, in KiB (VmRSS in /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "VmRSS":
                return int(value.split()[0])
        raise RuntimeError(f"no VmRSS in /proc/{self.pid}/status")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        self.client.close()
        if self.alive():
            self.proc.kill()
        self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
