"""Errors raised by the model package.

Every error a caller can provoke with bad input is a :class:`ValueError` subclass that names the
offending field, so the service can map it to ``INVALID_ARGUMENT`` without parsing messages::

    ModelError
    ├── InvalidInputError (also ValueError)   bad tensors, sample rates, labels, class names
    ├── CheckpointError (also ValueError)     weight files that do not match the architecture
    └── StateError                            an operation that the learner's state does not allow

A failed call leaves the learner's state unchanged.
"""

from __future__ import annotations


class ModelError(Exception):
    """Base class of every error raised on purpose by :mod:`model`."""


class InvalidInputError(ModelError, ValueError):
    """An input value is malformed. ``field`` names the argument or attribute at fault."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # pickles whole, e.g. out of a worker process
        return type(self), (self.field, self.problem)


class CheckpointError(ModelError, ValueError):
    """A weight file cannot be loaded strictly. ``key`` names the first offending tensor."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:
        return type(self), (self.source, self.key, self.problem)


class StateError(ModelError):
    """The learner cannot do this now (for example, predicting before any class is learned)."""
