"""The light daemon: Classify answered by a process that never imports PyTorch, learning in a child.

``python -m service serve`` runs it where the configuration allows (``server.light``;
service/light_mode.py decides), ``--light`` insists on it.

    this process (the serving process)              a child: the learner (python -m service serve)
    gRPC on server.listen, TLS and tokens as set    gRPC on 127.0.0.1:<free port>, TLS off
    Classify: the served version's head             learning, jobs, versions, rollback, model info
      (heads/vNNNN) over its base (bases/<digest>)  (service/learner_child.py)
    every other rpc: forwarded with its metadata    /metrics on a private loopback port
    health, reflection, /metrics (its own and the learner's)

The learner child is the daemon as it runs in one process: it learns, commits, and writes each
served version's head (``service/compiling.py``). This process watches ``<state_dir>/current`` and
swaps in the head of the version it names as soon as that head is on disk (``service/light_heads.py``;
``serving/``: NumPy and ONNX Runtime only), so its memory is that of gRPC, NumPy, ONNX Runtime and
the base's graphs. Until then (milliseconds after a commit or rollback, seconds for the first
version over a base) the learner answers Classify: no answer comes from a version older than the
last commit. A learner that crashes or is killed takes nothing with it: Classify goes on answering
from the last head; forwarded calls get UNAVAILABLE until the child, started again at once, is
back. The learner runs at a lower CPU priority (nice 10), so that Classify keeps the cores while a
job learns. Only versions served as their head over a base answer here (``lite``, whose base holds
its audio encoder), so ``--light`` refuses other configurations by name (service/light_mode.py).
Stopping (SIGTERM) stops the child too. With ``server.learner_idle_seconds`` (the default: 120 s),
a learner nothing has needed for that long sleeps (it ends) and the next call that needs it starts
it again (``service/learner_idle.py``): the daemon's idle memory is then this process's alone.
``/metrics`` (``server.metrics_listen``) is served here: this process's request and Classify series
and the learner's others, read from the learner's private endpoint (``service/light_metrics.py``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator

from service.codec import PATH_TO_PROTO
from service.config import ServiceConfig
from service.errors import ConfigError, Unavailable
from service.learner_child import LearnerChild, free_port
from service.light_heads import HeadWatcher, LightVersion, pytorch_state
from service.light_mode import light_problem
from service.store import read_current

if TYPE_CHECKING:
    import grpc

    from service.learner_idle import IdleLearner

log = logging.getLogger(__name__)

PROTO_PATHS = {code: path for path, code in PATH_TO_PROTO.items()}
FORWARDED_CLASSIFY = 8
"""Classify calls the learner answers at once while a new version is not served here yet; more are
answered here, so that the serving threads never all wait on the learner."""
LAG_WARNING_SECONDS = 60.0
"""How long a committed version may go unserved here before a warning (the first base: ~20 s)."""


def _metadata(child: LearnerChild) -> list[tuple[str, str]]:
    """What a forwarded call carries: this run's learner token (the caller's was checked here)."""
    return [("authorization", f"Bearer {child.token}")]


def _timeout(context: "grpc.ServicerContext") -> float | None:
    left = context.time_remaining()
    return left if left is not None and math.isfinite(left) and left < 1e6 else None


def forwarding_servicer(child: LearnerChild, classify: Callable[[Any, Callable[[], Any]], Any],
                        around: Callable[[], ContextManager[None]] = contextlib.nullcontext) -> Any:
    """A ContinualLearner servicer: ``classify(request, forward) -> response`` answers Classify, here
    or by calling ``forward()`` (the child answers it); the child answers every other rpc; each
    forwarded call runs inside ``around()`` (service/learner_idle.py counts them)."""
    import grpc

    from service._proto import mcil_pb2_grpc
    from service.api import boundary

    def unary(name: str) -> Callable[..., Any]:
        @boundary
        def call(self: Any, request: Any, context: "grpc.ServicerContext") -> Any:
            with around():
                return forward(name, request, context)

        return call

    def forward(name: str, request: Any, context: "grpc.ServicerContext", wake: bool = True,
                down: tuple["grpc.StatusCode", ...] = (grpc.StatusCode.CANCELLED,)) -> Any:
        """The learner's answer to ``name``; :class:`Unavailable` when it is restarting (a sleeping
        learner is woken and waited for unless ``wake`` is false), or when the call ends with a code
        of ``down`` while the caller is still there."""
        try:
            stub = child.stub(wait=_timeout(context) if wake else 0.0, wake=wake, is_active=context.is_active)
            return getattr(stub, name)(request, metadata=_metadata(child), timeout=_timeout(context))
        except ValueError:  # the channel closed under the call: the learner is restarting
            raise Unavailable("the learner is restarting; retry in a few seconds") from None
        except grpc.RpcError as exc:
            if exc.code() in down and context.is_active():
                raise Unavailable("the learner is restarting; retry in a few seconds") from None
            context.abort(exc.code(), exc.details() or "")

    def streaming(name: str) -> Callable[..., Any]:
        def call(self: Any, request: Any, context: "grpc.ServicerContext") -> Iterator[Any]:
            with around():
                yield from stream(name, request, context)

        return call

    def stream(name: str, request: Any, context: "grpc.ServicerContext") -> Iterator[Any]:
        restarting = "the learner is restarting; retry in a few seconds"
        try:
            stub = child.stub(wait=_timeout(context), is_active=context.is_active)
            call = getattr(stub, name)(request, metadata=_metadata(child), timeout=_timeout(context))
        except (Unavailable, ValueError):
            context.abort(grpc.StatusCode.UNAVAILABLE, restarting)
        context.add_callback(call.cancel)
        try:
            yield from call
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED and context.is_active():
                context.abort(grpc.StatusCode.UNAVAILABLE, restarting)
            elif context.is_active():
                context.abort(exc.code(), exc.details() or "")

    methods: dict[str, Any] = {name: unary(name) for name in
                               ("LearnNewClasses", "GetJob", "CancelJob", "ListClasses", "GetModelInfo",
                                "ListVersions", "Rollback", "InstallDistrictMerge")}
    methods.update({name: streaming(name) for name in ("WatchJob", "GetRoomStatistics")})

    @boundary
    def classify_call(self: Any, request: Any, context: "grpc.ServicerContext") -> Any:
        def to_learner() -> Any:  # never waits for a learner that is not listening; Unavailable if it goes
            with around():
                return forward("Classify", request, context, wake=False,
                               down=(grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE))

        return classify(request, to_learner)

    methods["Classify"] = classify_call
    return type("ForwardingServicer", (mcil_pb2_grpc.ContinualLearnerServicer,), methods)()


class LightServer:
    """The serving process (module docstring): its gRPC server, the head watcher and the learner child."""

    def __init__(self, config: ServiceConfig) -> None:
        problem = light_problem(config.server)
        if problem is not None:
            raise problem
        self.placement = config.server.base_placement(check=True)  # a GPU asked for and missing stops here
        self.config = config
        self.state_dir = Path(config.server.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.learner_metrics_port = free_port() if config.server.metrics_listen is not None else None
        self.child = LearnerChild(config, self.learner_metrics_port, on_failure=self._learner_failed)
        self.idle: "IdleLearner | None" = None  # puts the learner to sleep (server.learner_idle_seconds)
        self.metrics_page: Any = None
        self.metrics_endpoint: Any = None
        self._stopped = threading.Event()
        self._done = threading.Event()
        self._forwarding = threading.BoundedSemaphore(FORWARDED_CLASSIFY)  # Classify calls the learner answers
        self._lag_since: float | None = None  # since when the committed version is not served here
        self._lag_warned = False
        self._close_lock = threading.Lock()

    def start(self) -> int:
        """Starts the learner, the head watcher and the gRPC server; returns the gRPC port."""
        from concurrent import futures

        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection

        from service._proto import mcil_pb2, mcil_pb2_grpc
        from service.auth import Tokens, auth_interceptor
        from service.batching import ClassifyBatcher
        from service.codec import DecodeLimits
        from service.config import parse_address
        from service.interceptors import observability_interceptor, parsing_interceptor
        from service.metrics import ServiceMetrics
        from service.server import LOOPBACK, server_credentials
        from service.serving import ModelSlot

        config = self.config
        self.limits = DecodeLimits(max_image_pixels=config.limits.max_image_pixels,
                                   max_audio_seconds=config.limits.max_audio_seconds,
                                   min_audio_seconds=config.limits.min_audio_seconds)
        self.metrics = ServiceMetrics()
        self.metrics["mcil_classify_latency_objective_seconds"].set(config.monitoring.classify_p99_seconds)
        self.slot = ModelSlot(LightVersion(0, None, None))  # type: ignore[arg-type]
        self.watcher = HeadWatcher(self.state_dir, self.slot, threads=max(1, os.cpu_count() or 1),
                                   precision=config.server.base_precision,
                                   placement=self.placement)
        self.watcher.start()
        b = config.batching
        self.batcher = (ClassifyBatcher(self.slot, self.metrics, max_batch_size=b.max_batch_size,
                                        max_delay_ms=b.max_delay_ms, max_queue=b.max_queue, workers=b.workers)
                        if b.enabled else None)
        self.child.start()
        if config.server.learner_idle_seconds is not None:
            from service.learner_idle import IdleLearner

            self.idle = IdleLearner(self.child, config.server.learner_idle_seconds,
                                    served_is_current=self._serves_current,
                                    before_sleep=lambda: self.metrics_page and self.metrics_page.hold(),
                                    metadata=lambda: _metadata(self.child))
        tokens = Tokens.from_config(config.security)
        size = config.limits.max_message_bytes
        self.grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.server.max_workers, thread_name_prefix="mcil-rpc"),
            interceptors=[observability_interceptor(self.metrics), auth_interceptor(tokens, self.metrics),
                          parsing_interceptor()],
            options=[("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size),
                     ("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=config.server.max_workers * 8)
        servicer = forwarding_servicer(self.child, self._classify,
                                       self.idle.call if self.idle is not None else contextlib.nullcontext)
        mcil_pb2_grpc.add_ContinualLearnerServicer_to_server(servicer, self.grpc_server)  # type: ignore[no-untyped-call]
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc_server)
        names = (mcil_pb2.DESCRIPTOR.services_by_name["ContinualLearner"].full_name, health.SERVICE_NAME,
                 reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.grpc_server)
        host, port = parse_address("server.listen", config.server.listen)
        if tokens.admin is None and host not in LOOPBACK:
            log.warning("listening on %s without a bearer token: anyone who can reach it can teach or roll back the "
                        "model (set security.token_file or security.token_env)", config.server.listen)
        credentials = server_credentials(config)
        address = f"{host}:{port}"
        try:
            bound = (self.grpc_server.add_secure_port(address, credentials) if credentials
                     else self.grpc_server.add_insecure_port(address))
        except RuntimeError:
            bound = 0
        if bound == 0:
            self.close(0)
            raise ConfigError("server.listen", f"cannot listen on {config.server.listen}")
        if config.server.metrics_listen is not None:
            self._serve_metrics(config.server.metrics_listen)
        self.grpc_server.start()
        if self.idle is not None:
            self.idle.start()
        for name in ("", "mcil.v1.ContinualLearner"):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving process on %s:%d (version %d); PyTorch %s", host, bound, self.slot.current.number,
                 pytorch_state())
        return int(bound)

    @property
    def exit_status(self) -> int:
        """0, or the learner's status when it could not start (1 or 2)."""
        return self.child.exit_status

    def _learner_failed(self) -> None:
        threading.Thread(target=self.close, args=(0.0,), name="mcil-stop", daemon=True).start()

    def _serve_metrics(self, address: str) -> None:
        """``/metrics`` on ``address``: this process's series and the learner's (service/light_metrics.py)."""
        from service.config import parse_address
        from service.light_metrics import MetricsPage
        from service.metrics import MetricsEndpoint

        page = MetricsPage(self.metrics, f"http://127.0.0.1:{self.learner_metrics_port}/metrics",
                           asleep=lambda: self.child.asleep)
        self.metrics_page = page
        host, port = parse_address("server.metrics_listen", address)
        try:
            self.metrics_endpoint = MetricsEndpoint(page, host, port)  # type: ignore[arg-type]
        except OSError as exc:
            self.close(0)
            raise ConfigError("server.metrics_listen", f"cannot listen on {address}: {exc.strerror}") from None

    def _serves_current(self) -> bool:
        """Whether the version served here is the one ``<state_dir>/current`` names."""
        return self._lagging() is None

    def _lagging(self) -> int | None:
        """The committed version (``<state_dir>/current``) when it is not the one served here yet, else
        None; logs when that starts, and warns once when it lasts ``LAG_WARNING_SECONDS``."""
        try:
            committed = read_current(self.state_dir)
        except OSError as exc:  # unreadable now: the version served here is taken as current
            log.debug("cannot read %s: %s", self.state_dir / "current", exc)
            return None
        if committed == self.slot.current.number:
            self._lag_since = None
            return None
        now = time.monotonic()
        if self._lag_since is None:
            self._lag_since, self._lag_warned = now, False
            log.info("version %d is committed and not served here yet: the learner answers Classify until it is",
                     committed)
        elif not self._lag_warned and now - self._lag_since > LAG_WARNING_SECONDS:
            self._lag_warned = True
            log.warning("version %d is still not served here after %.0f s (its head or base is missing or does not "
                        "load: see the log above); the learner answers Classify meanwhile, up to %d calls at once",
                        committed, now - self._lag_since, FORWARDED_CLASSIFY)
        return committed

    def _classify(self, request: Any, to_learner: Callable[[], Any]) -> Any:
        """Classify, here from the served head; by the learner (``to_learner()``) while the version
        ``current`` names is not served here yet (milliseconds after a commit or rollback; seconds
        for the first version over a base), so that no answer comes from a version older than the
        last commit. Here anyway while the learner is not listening or already answers
        ``FORWARDED_CLASSIFY`` calls (the version before answers; UNAVAILABLE if there is none yet)."""
        from service.api import classify_response
        from service.batching import predict_now
        from service.codec import decode_raw
        from service.errors import InvalidRequest

        if not request.samples:
            raise InvalidRequest("samples", "give at least one sample")

        def classify(samples: list[Any], top_k: int) -> Any:
            if self.batcher is not None:
                return self.batcher.submit(samples, top_k)
            return predict_now(self.slot, samples, top_k)

        response = None
        committed = self._lagging()
        if committed is not None and self.child.awake and self._forwarding.acquire(blocking=False):
            try:
                response = to_learner()
            except Unavailable:  # it went away meanwhile: answered here
                response = None
            finally:
                self._forwarding.release()
        if response is None:
            if committed and self.slot.current.number == 0:
                raise Unavailable(f"version {committed} is loading; retry in a few seconds")
            response = classify_response(request, classify, self.limits, self.config.limits.max_classify_samples,
                                         decode=decode_raw)
        try:
            for result in response.results:
                self.metrics["mcil_classify_samples_total"].labels(PROTO_PATHS.get(result.path, "")).inc()
        except Exception:  # noqa: BLE001 - metrics never fail a request
            pass
        return response

    def close(self, grace: float) -> None:
        with self._close_lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
        self.child.stop_restarting()  # a learner that ends now (Ctrl-C reaches it too) stays ended
        if hasattr(self, "health"):
            self.health.enter_graceful_shutdown()
        if hasattr(self, "grpc_server"):
            self.grpc_server.stop(grace).wait()
        batcher = getattr(self, "batcher", None)
        if batcher is not None:
            batcher.close()
        if hasattr(self, "watcher"):
            self.watcher.close()
        if self.idle is not None:
            self.idle.close()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()
        self.child.close(grace)
        self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until :meth:`close` has finished (``True``) or ``timeout`` passed."""
        return self._done.wait(timeout)
