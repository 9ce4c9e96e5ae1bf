"""Errors raised by :mod:`export`.

::

    ExportError
    ├── ManifestError (also ValueError)     a manifest that is malformed or does not match the backbone
    ├── RunnerUnavailableError              a runner kind this machine cannot provide (names what is missing)
    ├── SegmentExportError                  a frozen piece the ONNX exporter could not convert
    └── CompileError                        a version that cannot be served as graphs (export/compiled.py)

The daemon treats :class:`RunnerUnavailableError` as "fall back to the next runner" when fallback is on.
"""

from __future__ import annotations


class ExportError(Exception):
    """Base class of every error raised on purpose by :mod:`export`."""


class ManifestError(ExportError, ValueError):
    """A manifest cannot be used. ``field`` names the offending entry (``segments[3].weights_sha256``)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class RunnerUnavailableError(ExportError):
    """A runner kind cannot run here. ``missing`` says what is missing, in one line."""

    def __init__(self, kind: str, missing: str) -> None:
        self.kind = kind
        self.missing = missing
        super().__init__(f"runner {kind!r} unavailable: {missing}")


class SegmentExportError(ExportError):
    """The ONNX exporter failed on one segment (``segment`` names it)."""

    def __init__(self, segment: str, problem: str) -> None:
        self.segment = segment
        self.problem = problem
        super().__init__(f"{segment}: {problem}")


class CompileError(ExportError):
    """A version cannot be compiled into graphs, or its graphs cannot be loaded (``field`` names why)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")
