"""The daemon's gRPC server interceptors: request metrics and access logging (a failure to record
never fails a request), and strict parsing of request messages (malformed bytes are a client error).

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


def observability_interceptor(metrics: "ServiceMetrics") -> "grpc.ServerInterceptor":
    import grpc

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

    class ObservabilityInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
        def intercept_service(
            self,
            continuation: Callable[["grpc.HandlerCallDetails"], "grpc.RpcMethodHandler | None"],
            details: "grpc.HandlerCallDetails",
        ) -> "grpc.RpcMethodHandler | None":
            handler = continuation(details)
            if handler is None:
                return None
            try:
                method = details.method
                kwargs = {"request_deserializer": handler.request_deserializer,
                          "response_serializer": handler.response_serializer}
                if handler.unary_unary is not None:
                    return grpc.unary_unary_rpc_method_handler(unary(method, handler.unary_unary), **kwargs)
                if handler.stream_unary is not None:
                    return grpc.stream_unary_rpc_method_handler(unary(method, handler.stream_unary), **kwargs)
                if handler.unary_stream is not None:
                    return grpc.unary_stream_rpc_method_handler(streaming(method, handler.unary_stream), **kwargs)
                if handler.stream_stream is not None:
                    return grpc.stream_stream_rpc_method_handler(streaming(method, handler.stream_stream), **kwargs)
            except Exception:  # noqa: BLE001 - fall back to the plain handler
                log.exception("cannot instrument %s", details.method)
            return handler

    return ObservabilityInterceptor()


def parsing_interceptor() -> "grpc.ServerInterceptor":
    """Parse request messages inside the call, so bytes that are not a valid message (truncated
    fields, invalid UTF-8 in a string) are the client's error: INVALID_ARGUMENT naming ``request``,
    and one log line. Left to gRPC, they end as INTERNAL ("Exception deserializing request!") with a
    traceback in the log. Installed innermost; every service (health and reflection too) gets it."""
    import grpc

    class ParsingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
        def intercept_service(
            self,
            continuation: Callable[["grpc.HandlerCallDetails"], "grpc.RpcMethodHandler | None"],
            details: "grpc.HandlerCallDetails",
        ) -> "grpc.RpcMethodHandler | None":
            handler = continuation(details)
            if handler is None or handler.request_deserializer is None:
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

            kwargs = {"response_serializer": handler.response_serializer}
            if handler.unary_unary is not None:
                inner_uu = handler.unary_unary
                return grpc.unary_unary_rpc_method_handler(
                    lambda raw, ctx: inner_uu(parsed(raw, ctx), ctx), **kwargs)
            if handler.unary_stream is not None:
                inner_us = handler.unary_stream
                return grpc.unary_stream_rpc_method_handler(
                    lambda raw, ctx: inner_us(parsed(raw, ctx), ctx), **kwargs)
            if handler.stream_unary is not None:
                inner_su = handler.stream_unary
                return grpc.stream_unary_rpc_method_handler(
                    lambda raw, ctx: inner_su(messages(raw, ctx), ctx), **kwargs)
            inner_ss = handler.stream_stream
            return grpc.stream_stream_rpc_method_handler(
                lambda raw, ctx: inner_ss(messages(raw, ctx), ctx), **kwargs)

    return ParsingInterceptor()
