"""What goes wrong when a base, a head or a placement cannot serve: every error names its field.

    raise BaseGraphsError("image.onnx", "does not match its checksum in base.json")

They are plain ``ValueError`` subclasses, so that this package needs nothing of the service; where
one reaches the service it becomes a configuration error naming the setting (``service/config.py``)
or a log line and another way to serve (``service/compiling.py``, ``service/light_heads.py``).
"""

from __future__ import annotations


class ServingError(ValueError):
    """``field`` names what is at fault, ``problem`` says what is wrong with it."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class BaseGraphsError(ServingError):
    """A base's folder is missing, damaged or of another base (``serving/base.py``)."""


class HeadDataError(ServingError):
    """A head's arrays are missing, damaged or inconsistent (``serving/head.py``)."""


class PlacementError(ServingError):
    """A placement is malformed or cannot run here (``serving/sessions.py``)."""
