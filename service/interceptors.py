"""The daemon's gRPC server interceptors: request metrics and access logging (a failure to record
never fails a request), and strict parsing of request messages (malformed bytes are a client error).
Both, and authentication (service/auth.py), are built with :func:`handler_interceptor`.

Every call is counted and timed by method and final status code (``mcil_requests_total``,
``mcil_request_duration_seconds``) and logged at DEBUG (INFO for failures) with its duration. The
interceptor wraps the method handler; if recording fails, the error is logged and the call goes on.
It is installed outermost, so calls refused by authentication are counted too.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    import grpc

    from service.metrics import ServiceMetrics

log = logging.getLogger("service.access")


def _code_name(context: Any, default: str) -> str:
    try:
        code = context.code()
    except Exception:  # noqa: BLE001
        return default
    if code is None:
        return default
    return str(getattr(code, "name", code))


HandlerRewrite = Callable[["grpc.HandlerCallDetails", "grpc.RpcMethodHandler"], "grpc.RpcMethodHandler | None"]
"""What an interceptor does to the handler of one call (return it, or a handler wrapping it)."""

_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
"""A method handler's four shapes (request streaming, response streaming), as gRPC names them."""


def handler_interceptor(rewrite: HandlerRewrite) -> "grpc.ServerInterceptor":
    """A server interceptor that passes each call's handler (when the method exists) to ``rewrite``."""
    import grpc

    class Interceptor(grpc.ServerInterceptor):  # type: ignore[misc]
        def intercept_service(
            self,
            continuation: Callable[["grpc.HandlerCallDetails"], "grpc.RpcMethodHandler | None"],
            details: "grpc.HandlerCallDetails",
        ) -> "grpc.RpcMethodHandler | None":
            handler = continuation(details)
            return None if handler is None else rewrite(details, handler)

    return Interceptor()


def rebuild(handler: "grpc.RpcMethodHandler", wrap: Callable[[str, Callable[..., Any]], Callable[..., Any]],
            request_deserializer: Callable[[bytes], Any] | None) -> "grpc.RpcMethodHandler":
    """``handler`` with its behaviour replaced by ``wrap(kind, behaviour)`` (``kind``: one of ``_KINDS``)."""
    import grpc

    for kind in _KINDS:
        behavior = getattr(handler, kind)
        if behavior is not None:
            make = getattr(grpc, f"{kind}_rpc_method_handler")
            return make(wrap(kind, behavior), request_deserializer=request_deserializer,
                        response_serializer=handler.response_serializer)
    return handler


def observability_interceptor(metrics: "ServiceMetrics") -> "grpc.ServerInterceptor":
    def record(method: str, code: str, started: float) -> None:
        try:
            seconds = time.perf_counter() - started
            rpc = method.rsplit("/", 1)[-1]
            metrics.observe_request(rpc, code, seconds)
            level = logging.DEBUG if code == "OK" else logging.INFO
            log.log(level, "%s %s %.1f ms", method, code, seconds * 1000)
        except Exception:  # noqa: BLE001 - never fail a request over metrics
            log.debug("cannot record %s", method, exc_info=True)

    def unary(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(request: Any, context: "grpc.ServicerContext") -> Any:
            started = time.perf_counter()
            try:
                response = behavior(request, context)
            except BaseException:
                record(method, _code_name(context, "UNKNOWN" if context.is_active() else "CANCELLED"), started)
                raise
            record(method, _code_name(context, "OK"), started)
            return response

        return wrapped

    def streaming(method: str, behavior: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        def wrapped(request: Any, context: "grpc.ServicerContext") -> Iterator[Any]:
            started = time.perf_counter()
            try:
                yield from behavior(request, context)
            except BaseException as exc:
                default = "CANCELLED" if isinstance(exc, GeneratorExit) else "UNKNOWN"
                record(method, _code_name(context, default), started)
                raise
            record(method, _code_name(context, "OK"), started)

        return wrapped

    def instrument(details: "grpc.HandlerCallDetails", handler: "grpc.RpcMethodHandler") -> "grpc.RpcMethodHandler":
        method = details.method
        try:
            return rebuild(handler, lambda kind, behavior: (streaming if kind.endswith("_stream") else unary)(
                method, behavior), handler.request_deserializer)
        except Exception:  # noqa: BLE001 - fall back to the plain handler
            log.exception("cannot instrument %s", method)
            return handler

    return handler_interceptor(instrument)


def parsing_interceptor() -> "grpc.ServerInterceptor":
    """Parse request messages inside the call, so bytes that are not a valid message (truncated
    fields, invalid UTF-8 in a string) are the client's error: INVALID_ARGUMENT naming ``request``,
    and one log line. Left to gRPC, they end as INTERNAL ("Exception deserializing request!") with a
    traceback in the log. Installed innermost; every service (health and reflection too) gets it."""
    import grpc

    def parse_inside(details: "grpc.HandlerCallDetails", handler: "grpc.RpcMethodHandler") -> "grpc.RpcMethodHandler":
        if handler.request_deserializer is None:
            return handler
        parse = handler.request_deserializer
        method = details.method

        def parsed(raw: bytes, context: "grpc.ServicerContext") -> Any:
            try:
                return parse(raw)
            except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError, UnicodeDecodeError, ...
                log.info("%s: malformed request message (%s, %d bytes)", method, type(exc).__name__, len(raw))
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"request: not a valid message for {method} ({type(exc).__name__})")

        def messages(raw: Iterator[bytes], context: "grpc.ServicerContext") -> Iterator[Any]:
            for item in raw:
                yield parsed(item, context)

        def wrap(kind: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
            read = messages if kind.startswith("stream_") else parsed
            return lambda raw, context: behavior(read(raw, context), context)

        return rebuild(handler, wrap, None)  # the call receives bytes; ``wrap`` parses them

    return handler_interceptor(parse_inside)
