"""Build and run the daemon's gRPC server: ``create_server(config) -> (server, port)``.

The server carries the ContinualLearner service, ``grpc.health.v1`` health checking and server
reflection, behind three interceptors (metrics/logging outermost, then authentication, then strict
parsing of request bytes). TLS and mutual TLS come from :class:`~service.config.SecurityConfig`;
message sizes from :class:`~service.config.LimitsConfig`. Prometheus ``/metrics`` is served on its own port.

Stopping (:meth:`DaemonServer.stop`): health goes NOT_SERVING, new calls are refused, in-flight calls
get ``grace`` seconds to finish, queued Classify calls are answered, and a running training job is
stopped and recorded as failed (interrupted); the served version stays what it was.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from service.config import ServiceConfig, parse_address
from service.errors import ConfigError

if TYPE_CHECKING:
    import grpc

    from model.backbone import TriModalBackbone
    from service.daemon import Daemon
    from service.metrics import MetricsEndpoint

log = logging.getLogger(__name__)

SERVICE_NAME = "mcil.v1.ContinualLearner"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


class DaemonServer:
    """A running daemon: the gRPC server, the model core and the metrics endpoint."""

    def __init__(self, grpc_server: "grpc.Server", daemon: "Daemon", health: object,
                 metrics_endpoint: "MetricsEndpoint | None") -> None:
        self.grpc_server = grpc_server
        self.daemon = daemon
        self._health = health
        self._metrics_endpoint = metrics_endpoint
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_endpoint.port if self._metrics_endpoint is not None else None

    def stop(self, grace: float | None = None) -> None:
        """Graceful stop (idempotent); ``grace`` defaults to ``server.grace_seconds``."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            grace = self.daemon.config.server.grace_seconds if grace is None else grace
            log.info("stopping: health NOT_SERVING, %.1f s for in-flight calls", grace)
            try:
                self._health.enter_graceful_shutdown()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001
                log.exception("cannot set health to NOT_SERVING")
            if self.daemon.jobs is not None:
                self.daemon.jobs.close(timeout=0)  # interrupt a running job now; its thread is joined below
            self.grpc_server.stop(grace).wait()
            self.daemon.close(grace)
            if self._metrics_endpoint is not None:
                self._metrics_endpoint.close()
            self._stopped.set()
            log.info("stopped")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` finished (``True``) or ``timeout`` passed."""
        return self._stopped.wait(timeout)


def _read(field: str, path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(field, f"cannot read {str(path)!r}: {exc.strerror}") from None


def server_credentials(config: ServiceConfig) -> "grpc.ServerCredentials | None":
    import grpc

    sec = config.security
    if sec.tls_cert is None:
        return None
    cert = _read("security.tls_cert", sec.tls_cert)
    key = _read("security.tls_key", sec.tls_key)
    client_ca = _read("security.tls_client_ca", sec.tls_client_ca)
    assert cert is not None and key is not None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def create_server(config: ServiceConfig, *, backbone: "TriModalBackbone | None" = None) -> tuple[DaemonServer, int]:
    """Open the state directory, load the served version, start serving. Returns (server, gRPC port).

    ``backbone``: an untrained backbone of the configured preset to copy instead of building one.
    """
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from service._proto import mcil_pb2, mcil_pb2_grpc
    from service.api import ContinualLearnerServicer
    from service.auth import Tokens, auth_interceptor
    from service.daemon import Daemon
    from service.interceptors import observability_interceptor, parsing_interceptor
    from service.metrics import MetricsEndpoint

    tokens = Tokens.from_config(config.security)
    credentials = server_credentials(config)
    host, port = parse_address("server.listen", config.server.listen)
    if tokens.admin is None and host not in LOOPBACK:
        log.warning("listening on %s without a bearer token: anyone who can reach it can teach or roll back the "
                    "model (set security.token_file or security.token_env)", config.server.listen)

    daemon = Daemon(config, backbone=backbone)
    daemon.open()
    metrics_endpoint = None
    try:
        size = config.limits.max_message_bytes
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.server.max_workers, thread_name_prefix="mcil-rpc"),
            interceptors=[observability_interceptor(daemon.metrics), auth_interceptor(tokens, daemon.metrics),
                          parsing_interceptor()],
            options=[("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size),
                     ("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=config.server.max_workers * 8,
        )
        mcil_pb2_grpc.add_ContinualLearnerServicer_to_server(  # type: ignore[no-untyped-call]
            ContinualLearnerServicer(daemon), server)
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = (mcil_pb2.DESCRIPTOR.services_by_name["ContinualLearner"].full_name, health.SERVICE_NAME,
                 reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        address = f"{host}:{port}"
        try:
            bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise ConfigError("server.listen", f"cannot listen on {config.server.listen}")
        if config.server.metrics_listen is not None:
            m_host, m_port = parse_address("server.metrics_listen", config.server.metrics_listen)
            try:
                metrics_endpoint = MetricsEndpoint(daemon.metrics, m_host, m_port)
            except OSError as exc:
                raise ConfigError("server.metrics_listen", f"cannot listen on {config.server.metrics_listen}: "
                                  f"{exc.strerror}") from None
        server.start()
        for name in ("", SERVICE_NAME):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    except BaseException:
        if metrics_endpoint is not None:
            metrics_endpoint.close()
        daemon.close(0)
        raise
    tls = (" with mutual TLS" if config.security.tls_client_ca else " with TLS") if credentials else ""
    metrics_at = f"port {metrics_endpoint.port}" if metrics_endpoint is not None else "(disabled)"
    log.info("serving %s on %s:%d%s (version %d); metrics on %s", SERVICE_NAME, host, bound, tls,
             daemon.served.number, metrics_at)
    return DaemonServer(server, daemon, health_servicer, metrics_endpoint), bound
