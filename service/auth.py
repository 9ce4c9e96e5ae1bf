"""Bearer-token authentication, as a gRPC server interceptor.

Two tokens, each read once at start-up from a file or an environment variable:

- the admin token allows every call, and is required for the mutating ones (LearnNewClasses,
  CancelJob, Rollback) and the district's (GetRoomStatistics, InstallDistrictMerge: a room's sums);
- the optional read token allows the other calls when ``security.require_token_for_all`` is set.

Clients send ``authorization: Bearer <token>``. A missing or unknown token gets ``UNAUTHENTICATED``,
a read token on a mutating call gets ``PERMISSION_DENIED``; the message never says more than that.
Tokens are compared in constant time. Health checks stay open so orchestrators can probe the daemon.
With no admin token configured, calls are not authenticated (the daemon logs a warning when it
listens beyond loopback).
"""

from __future__ import annotations

import hmac
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.errors import ConfigError
from service.interceptors import handler_interceptor

if TYPE_CHECKING:
    import grpc

    from service.config import SecurityConfig
    from service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

SERVICE = "/mcil.v1.ContinualLearner/"
MUTATING = frozenset(SERVICE + m for m in ("LearnNewClasses", "CancelJob", "Rollback",
                                           "GetRoomStatistics", "InstallDistrictMerge"))
OPEN = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


def _read_token(field: str, path: Path | None, env: str | None) -> bytes | None:
    if path is not None:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(field, f"cannot read the token file: {exc.strerror}") from None
    elif env is not None:
        token = os.environ.get(env, "").strip()
        if not token:
            raise ConfigError(field, f"environment variable {env} is not set or empty")
    else:
        return None
    if len(token) < 16:
        raise ConfigError(field, "the token must have at least 16 characters")
    return token.encode()


@dataclass(frozen=True)
class Tokens:
    admin: bytes | None
    read: bytes | None
    require_for_all: bool

    @classmethod
    def from_config(cls, security: "SecurityConfig") -> "Tokens":
        admin = _read_token("security.token_file", security.token_file, security.token_env)
        read = _read_token("security.read_token_file", security.read_token_file, security.read_token_env)
        if read is not None and admin is None:
            raise ConfigError("security.read_token_file", "a read token needs an admin token too")
        return cls(admin, read, security.require_token_for_all)

    def decide(self, method: str, presented: bytes | None) -> str | None:
        """``None`` to allow, else the status code name to refuse with."""
        if self.admin is None or method in OPEN:
            return None
        is_admin = presented is not None and hmac.compare_digest(presented, self.admin)
        is_read = presented is not None and self.read is not None and hmac.compare_digest(presented, self.read)
        if method in MUTATING:
            if is_admin:
                return None
            return "PERMISSION_DENIED" if is_read else "UNAUTHENTICATED"
        if not self.require_for_all or is_admin or is_read:
            return None
        return "UNAUTHENTICATED"


def bearer(metadata: Any) -> bytes | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip().encode()
            return b""
    return None


def _refusal(handler: "grpc.RpcMethodHandler", code_name: str) -> "grpc.RpcMethodHandler":
    import grpc

    code = getattr(grpc.StatusCode, code_name)
    message = "authentication required" if code_name == "UNAUTHENTICATED" else "permission denied"

    def refuse(_request: Any, context: "grpc.ServicerContext") -> Any:
        context.abort(code, message)

    def refuse_stream(request: Any, context: "grpc.ServicerContext") -> Any:
        context.abort(code, message)
        yield  # pragma: no cover - abort raises

    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **kwargs)
    return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)


def auth_interceptor(tokens: Tokens, metrics: "ServiceMetrics") -> "grpc.ServerInterceptor":
    def check(details: "grpc.HandlerCallDetails", handler: "grpc.RpcMethodHandler") -> "grpc.RpcMethodHandler":
        try:
            verdict = tokens.decide(details.method, bearer(details.invocation_metadata))
        except Exception:  # noqa: BLE001 - a bug here must refuse, never let through
            log.exception("auth: cannot decide on %s", details.method)
            verdict = "UNAUTHENTICATED"
        if verdict is None:
            return handler
        try:
            metrics["mcil_auth_failures_total"].labels(verdict).inc()
        except Exception:  # noqa: BLE001
            pass
        return _refusal(handler, verdict)

    return handler_interceptor(check)
