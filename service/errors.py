"""The daemon's one error hierarchy, mapped to gRPC status codes only at the service boundary.

Code inside :mod:`service` raises these (or lets :mod:`model.errors` propagate); the servicer turns
them into a status with :func:`status_for`. Messages of ``ServiceError`` subclasses are written for the
client; anything else becomes ``INTERNAL`` with a generic message, and the details only reach the log::

    ServiceError                        (code)
    ├── InvalidRequest                  INVALID_ARGUMENT     bad field values, undecodable bytes
    ├── NotFound                        NOT_FOUND            unknown job or version
    ├── FailedPrecondition              FAILED_PRECONDITION  not allowed in the current state
    ├── ResourceExhausted               RESOURCE_EXHAUSTED   queue full, request too large
    ├── Unauthenticated                 UNAUTHENTICATED      missing or wrong credentials
    ├── PermissionDenied                PERMISSION_DENIED    credentials without the needed rights
    └── Unavailable                     UNAVAILABLE          the daemon is shutting down
    ConfigError (also ValueError)       (start-up only)      a configuration value is invalid

    model.errors.InvalidInputError  -> INVALID_ARGUMENT
    model.errors.CheckpointError    -> FAILED_PRECONDITION
    model.errors.StateError         -> FAILED_PRECONDITION
"""

from __future__ import annotations

import enum


class Code(enum.Enum):
    """gRPC status code names (the values are ``grpc.StatusCode`` member names)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


class ServiceError(Exception):
    """Base of every error the daemon raises on purpose; ``message`` is safe to show to the client."""

    code: Code = Code.INTERNAL

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class InvalidRequest(ServiceError, ValueError):
    """A request field is malformed. ``field`` names it."""

    code = Code.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class NotFound(ServiceError):
    code = Code.NOT_FOUND


class FailedPrecondition(ServiceError):
    code = Code.FAILED_PRECONDITION


class ResourceExhausted(ServiceError):
    code = Code.RESOURCE_EXHAUSTED


class Unauthenticated(ServiceError):
    code = Code.UNAUTHENTICATED

    def __init__(self, message: str = "authentication required") -> None:
        super().__init__(message)


class PermissionDenied(ServiceError):
    code = Code.PERMISSION_DENIED

    def __init__(self, message: str = "permission denied") -> None:
        super().__init__(message)


class Unavailable(ServiceError):
    code = Code.UNAVAILABLE


class ConfigError(ValueError):
    """A configuration value is invalid. ``field`` is its dotted name (``security.tls_cert``)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"configuration {field}: {problem}")


INTERNAL_MESSAGE = "internal error"
"""What the client sees for an unexpected exception (the traceback goes to the log only)."""


def status_for(exc: BaseException) -> tuple[Code, str]:
    """The status code and client-safe message for ``exc``."""
    from model.errors import CheckpointError, InvalidInputError, StateError

    if isinstance(exc, ServiceError):
        return exc.code, exc.message
    if isinstance(exc, InvalidInputError):
        return Code.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, (StateError, CheckpointError)):
        return Code.FAILED_PRECONDITION, str(exc)
    return Code.INTERNAL, INTERNAL_MESSAGE
