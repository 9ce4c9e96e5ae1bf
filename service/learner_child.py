"""The daemon as the learner child of the serving process (``service/light.py``), started again when it ends.

    child = LearnerChild(config, metrics_port)      # the daemon's config, for 127.0.0.1 without TLS
    child.start(); child.stub().GetModelInfo(...)   # Unavailable while it (re)starts
    child.sleep()                                   # ends it until the next stub(): service/learner_idle.py
    child.close(grace)                              # SIGTERM, then wait

The child is ``python -m service serve`` with the serving process's configuration but for its
address (a free loopback port, read from its ``mcild listening on port N`` line), no TLS (the serving
process terminates it), ``server.light`` off, and its metrics on a private loopback port. It runs at
a lower CPU priority (``LEARNER_NICE``) and gets SIGTERM when the serving process ends, even killed
with -9 (it watches its parent: ``end_with_parent``), so that no learner outlives its serving process.
It takes no ``MCIL_*`` variable from the environment (its configuration file holds the whole
configuration), runs on the CPU (a version is served as its head only from a CPU learner), and
answers only calls that carry this run's own token, which the serving process adds to what it
forwards after checking the caller's. A learner that ends with the daemon's refused-start statuses
(1: e.g. the state directory in use; 2: a configuration error) before it ever listened is not
started again: the serving process stops with that status.

A learner put to sleep (:meth:`LearnerChild.sleep`, by ``service/learner_idle.py`` when nothing has
asked for it for ``server.learner_idle_seconds``) ends gracefully and is not started again until a
call needs it: :meth:`LearnerChild.stub` then starts it and waits for it to listen (up to
``WAKE_SECONDS`` or the call's deadline) instead of answering UNAVAILABLE.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from service.config import ServiceConfig
from service.errors import Unavailable

if TYPE_CHECKING:
    import grpc

log = logging.getLogger(__name__)

RESTART_SECONDS = 1.0
ENV_PREFIX = "MCIL_"
TOKEN_ENV = "MCIL_LEARNER_TOKEN"  # this run's token for calls to the learner (the child's security.token_env)
PARENT_ENV = "MCIL_LEARNER_PARENT"  # the serving process's pid, watched by the learner (end_with_parent)
START_ERRORS = (1, 2)  # the daemon's exit statuses for a refused start (service/__main__.py)
WAKE_SECONDS = 120.0  # how long a call waits for a sleeping learner to start and listen
WAIT_STEP_SECONDS = 0.25  # how often a waiting call looks whether to stop waiting
LEARNER_NICE = 10
"""The learner child's lower CPU priority: Classify keeps the cores it needs while a job learns."""


class LearnerChild:
    """The learner daemon in a child process, started again whenever it ends (module docstring)."""

    def __init__(self, config: ServiceConfig, metrics_port: int | None = None,
                 on_failure: "Callable[[], None] | None" = None) -> None:
        """``metrics_port``: where the learner serves its metrics (a private loopback port), or None.
        ``on_failure``: called (from the supervising thread) when the learner cannot start at all."""
        metrics = f"127.0.0.1:{metrics_port}" if metrics_port is not None else None
        server = dataclasses.replace(config.server, listen="127.0.0.1:0", light=False, metrics_listen=metrics,
                                     device="cpu", learner_idle_seconds=None)  # a version is served as its head only from a CPU learner
        # Only the serving process may call the learner: every call needs this run's own token, which
        # the serving process puts on what it forwards once it has checked the caller's.
        self.token = secrets.token_urlsafe(32)
        security = dataclasses.replace(config.security, tls_cert=None, tls_key=None, tls_client_ca=None,
                                       token_file=None, token_env=TOKEN_ENV, read_token_file=None,
                                       read_token_env=None, require_token_for_all=True)
        child = dataclasses.replace(config, server=server, security=security)
        self.config_file = Path(config.server.state_dir) / ".learner-config.json"
        temporary = self.config_file.with_name(f".learner-config-{secrets.token_hex(4)}.json")
        temporary.write_text(json.dumps(dataclasses.asdict(child), default=str))
        temporary.replace(self.config_file)
        # The file holds the whole configuration; MCIL_* variables would override it in the child.
        self.environment = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        self.environment.update({TOKEN_ENV: self.token, PARENT_ENV: str(os.getpid())})
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._channel: "grpc.Channel | None" = None
        self._stub: Any = None
        self._closing = threading.Event()
        self._listening = threading.Event()  # the stub is there
        self._asleep = threading.Event()  # put to sleep: not started again until woken
        self._wake = threading.Event()
        self._slept_pid: int | None = None  # the learner put to sleep, until the supervisor has seen it end
        self._waiters = threading.BoundedSemaphore(config.server.max_open_streams)  # calls waiting for a wake
        self.grace = config.server.grace_seconds
        self._thread = threading.Thread(target=self._supervise, name="mcil-learner", daemon=True)
        self.failed = ""  # why the learner cannot start, once it is known
        self.exit_status = 0  # the status it ended with then
        self.listened = False  # whether it ever listened (a configuration error after that is retried)
        self._on_failure = on_failure

    def start(self) -> None:
        self._thread.start()

    def stub(self, wait: float | None = None, wake: bool = True,
             is_active: Callable[[], bool] = lambda: True) -> Any:
        """The child's ContinualLearner stub; Unavailable while it (re)starts. A sleeping learner is
        started (unless ``wake`` is false), and the call waits for it to listen: up to ``wait`` seconds
        (at most ``WAKE_SECONDS``), while ``is_active()`` (the caller is still there), and unless the
        learner ends before it listens or the serving process closes. At most
        ``server.max_open_streams`` calls wait at once (the other threads stay for Classify); more get
        Unavailable at once."""
        with self._lock:
            if self._stub is not None:
                return self._stub
            sleeping = self._asleep.is_set() and wake
            if sleeping and not self._wake.is_set():
                self._wake.set()
                log.info("a call needs the learner: starting it")
        if sleeping and self._waiters.acquire(blocking=False):
            try:
                deadline = time.monotonic() + (WAKE_SECONDS if wait is None else min(WAKE_SECONDS, wait))
                while not self._listening.wait(WAIT_STEP_SECONDS):
                    if (self._closing.is_set() or not self._asleep.is_set() or time.monotonic() > deadline
                            or not is_active()):
                        break
            finally:
                self._waiters.release()
            with self._lock:
                if self._stub is not None:
                    return self._stub
        raise Unavailable("the learner is starting; retry in a few seconds")

    @property
    def awake(self) -> bool:
        """Whether the learner listens now."""
        return self._listening.is_set()

    @property
    def asleep(self) -> bool:
        """Whether the learner was put to sleep and does not listen yet (it may be waking up)."""
        return self._asleep.is_set() and not self._listening.is_set()

    def sleep(self) -> bool:
        """Ends a listening learner gracefully (SIGTERM) and starts it again only when :meth:`stub` is
        next called. ``False``: it was not listening (starting, already asleep or closing)."""
        with self._lock:
            process = self._process
            if self._closing.is_set() or self._stub is None or process is None or process.poll() is not None:
                return False
            self._wake.clear()
            self._asleep.set()
            self._listening.clear()
            self._channel, channel, self._stub = None, self._channel, None  # new calls wait for the next one
            self._slept_pid = process.pid
        log.info("the learner (pid %d) goes to sleep: nothing asked for it", process.pid)
        process.terminate()
        threading.Thread(target=self._kill_if_stuck, args=(process,), name="mcil-learner-sleep", daemon=True).start()
        if channel is not None:
            channel.close()
        return True

    def _kill_if_stuck(self, process: "subprocess.Popen[bytes]") -> None:
        """A learner that does not end within its grace (and 30 s) of being put to sleep is killed."""
        try:
            process.wait(timeout=self.grace + 30)
        except subprocess.TimeoutExpired:
            log.warning("the learner (pid %d) did not end when put to sleep: killing it", process.pid)
            process.kill()

    def stop_restarting(self) -> None:
        """From now on a learner that ends stays ended (the serving process is stopping)."""
        self._closing.set()

    def close(self, grace: float) -> None:
        self._closing.set()
        self._wake.set()  # a sleeping supervisor ends
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=grace + 30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._thread.join(timeout=5)
        self.config_file.unlink(missing_ok=True)

    def _supervise(self) -> None:
        while not self._closing.is_set():
            self.listened |= (result := self._run_once())[0]
            code = result[1]
            if not self.listened and code in START_ERRORS and not self._closing.is_set():
                # It never served and says why (its configuration, a state directory in use): starting it
                # again cannot help.
                self.failed = f"the learner cannot start (exit {code}; its log above says why)"
                self.exit_status = code
                log.error("%s; the serving process stops", self.failed)
                if self._on_failure is not None:
                    self._on_failure()
                return
            if self._slept_pid is not None:  # it ended because it was put to sleep
                self._slept_pid = None
                self._wake.wait()  # until a call needs it (or the serving process closes); then at once
                continue
            if not self._closing.wait(RESTART_SECONDS):
                log.warning("the learner stopped; starting it again")

    def _run_once(self) -> tuple[bool, int]:
        """Runs the child until it ends: ``(whether it listened, its exit status)``."""
        import grpc

        from service._proto import mcil_pb2_grpc

        command = [sys.executable, "-m", "service", "serve", "--config", os.fspath(self.config_file)]
        with self._lock:
            if self._closing.is_set():
                return False, 0
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=None, env=self.environment)
            self._process = process
        try:
            os.setpriority(os.PRIO_PROCESS, process.pid, LEARNER_NICE)
        except OSError as exc:
            log.warning("cannot lower the learner's CPU priority: %s", exc)
        assert process.stdout is not None
        listened = False
        for raw in process.stdout:  # "mcild listening on port N" once it serves
            line = raw.decode(errors="replace").strip()
            if line.startswith("mcild listening on port "):
                listened = True
                size = 1 << 30
                channel = grpc.insecure_channel(f"127.0.0.1:{int(line.rsplit(' ', 1)[1])}",
                                                options=[("grpc.max_receive_message_length", size),
                                                         ("grpc.max_send_message_length", size)])
                with self._lock:
                    self._channel, self._stub = channel, mcil_pb2_grpc.ContinualLearnerStub(channel)  # type: ignore[no-untyped-call]
                    self._listening.set()
                    self._asleep.clear()
                log.info("the learner (pid %d) listens on %s", process.pid, line.rsplit(" ", 1)[1])
        code = process.wait()
        with self._lock:
            channel, self._channel, self._stub = self._channel, None, None
            self._listening.clear()
        if channel is not None:
            channel.close()
        if not listened and self._asleep.is_set() and self._wake.is_set():
            self._asleep.clear()  # woken, it ended before it listened: calls stop waiting; restarted as after a crash
        if self._slept_pid == process.pid:
            log.info("the learner (pid %d) sleeps (exit %s)", process.pid, code)
        elif not self._closing.is_set():
            log.error("the learner (pid %d) ended with %s", process.pid, code)
        return listened, code


def free_port() -> int:
    """A loopback port nobody listens on now (for the learner's private metrics endpoint)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def end_with_parent() -> None:
    """In a learner started by a serving process (``MCIL_LEARNER_PARENT`` names it): stop gracefully
    (SIGTERM to itself) within a second of that process ending, even killed with -9."""
    import signal
    import time

    parent = os.environ.get(PARENT_ENV, "")
    if not parent.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="mcil-parent-watch", daemon=True).start()
