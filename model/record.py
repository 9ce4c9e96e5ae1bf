"""One run's record: the accuracy matrices that every reported figure is computed from.

:class:`ContinualRecord` is the one object a class-incremental run stores: an :class:`AccuracyMatrix`
per modality path (row ``t``: accuracy on every task so far, right after training task ``t``) plus the
few measurements a matrix cannot give (class order, held-out counts, ``z``/``b``, ``w_t``, NMI). Nothing
else is kept: :meth:`ContinualRecord.figures` recomputes every :class:`Figures` field from it with the
formulas of :mod:`model.metrics`. Bad input raises :class:`~model.errors.InvalidInputError` naming the field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from model.errors import InvalidInputError, StateError
from model.metrics import (
    average_accuracy,
    bwt_at,
    forgetting_at,
    fwt,
    fwt_at,
    in_range,
    last_accuracy,
    m1,
    m2,
    matrix_row,
    matrix_rows,
    optional_percent,
    percent,
    pooled_accuracy,
    positive_count,
    task_number,
)

PATHS: tuple[str, ...] = ("av", "visual", "audio")
"""Modality paths: ``av`` = both inputs through the fusion module, ``visual`` = image only,
``audio`` = audio only (the fusion module's single-modality path)."""

RECORD_FORMAT = 1
"""Version of the dict written by :meth:`ContinualRecord.to_dict`."""

POOLED_TOLERANCE = 1e-6
"""How far (in percentage points) a stored ``A_t`` may be from the sample-weighted row of the matrix."""


@dataclass
class AccuracyMatrix:
    """Lower-triangular matrix of accuracies in percent: ``rows[t - 1][j - 1] == a[t][j]``.

    Row ``t - 1`` is written after training task ``t`` and has one entry per task seen so far
    (``t`` entries). Grow it with :meth:`append_row`; a rejected row leaves the matrix unchanged.

    >>> a = AccuracyMatrix()
    >>> a.append_row([90.0]); a.append_row([60.0, 80.0])
    >>> a.value(2, 1)
    60.0
    """

    rows: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rows = matrix_rows(self.rows)

    @property
    def num_tasks(self) -> int:
        """``T``: the number of tasks trained so far (rows stored)."""
        return len(self.rows)

    def append_row(self, row: Sequence[float]) -> None:
        """Store ``a[T+1][1..T+1]`` (percent) after training one more task."""
        self.rows.append(matrix_row("row", row, self.num_tasks + 1))

    def value(self, t: int, j: int) -> float:
        """``a[t][j]`` with the docs' 1-indexed task numbers (``j <= t``)."""
        t = task_number("t", t, self.num_tasks)
        j = task_number("j", j, t)
        return self.rows[t - 1][j - 1]

    def to_list(self) -> list[list[float]]:
        return [list(row) for row in self.rows]


# ----------------------------------------------------------------------------------------------------
# The figures of one path, and the record they are computed from


@dataclass(frozen=True)
class Figures:
    """Every reported figure of one modality path after ``tasks`` tasks (see docs/metrics.md).

    Accuracies, forgetting, BWT and FWT are in percent (points); M1 in [0, 100]; M2 around [0, 1].
    ``fwt``/``fwt_steps`` are None when some ``z`` or ``b`` was not measured, ``m1`` when some ``w_t``
    was not, ``m2`` when FWT or an NMI is missing.
    """

    tasks: int
    average_accuracy: float
    last_accuracy: float
    forgetting: float
    bwt: float
    fwt: float | None
    m1: float | None
    m2: float | None
    incremental_accuracy: tuple[float, ...]
    forgetting_steps: tuple[float, ...]
    bwt_steps: tuple[float, ...]
    fwt_steps: tuple[float, ...] | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class ContinualRecord:
    """Everything one class-incremental run produces; every figure is recomputed from it.

    Per task ``t`` (index ``t - 1``): ``class_order[t - 1]`` are the classes it added,
    ``held_out_counts[t - 1]`` its number of held-out samples, ``similarities[t - 1]`` = ``w_t``
    (``w_1 = 0``; None = not measured). Per modality path (keys of ``matrices``, a subset of
    :data:`PATHS`; paths without data are simply absent): the accuracy matrix, the pooled accuracies
    ``A_t`` (``pooled[path][t - 1]``, must equal the sample-weighted matrix row), and for forward
    transfer ``z[path][t - 1]`` (accuracy on task ``t`` before training it) and ``b[path][t - 1]``
    (the untrained model's accuracy on task ``t``), None where not measured; a path absent from ``z``
    or ``b`` counts as not measured. ``nmi_fv``/``nmi_fa`` come from :func:`clustering_nmi` after the
    last task (None when not measured); they describe the model's features, so every path's M2 uses
    the same two values.

    Grow it with :meth:`add_task` (validated, all-or-nothing) or build it whole; call
    :meth:`validate` after editing fields by hand.
    """

    seed: int = 0
    class_order: list[list[str]] = field(default_factory=list)
    held_out_counts: list[int] = field(default_factory=list)
    matrices: dict[str, AccuracyMatrix] = field(default_factory=dict)
    pooled: dict[str, list[float]] = field(default_factory=dict)
    z: dict[str, list[float | None]] = field(default_factory=dict)
    b: dict[str, list[float | None]] = field(default_factory=dict)
    similarities: list[float | None] = field(default_factory=list)
    nmi_fv: float | None = None
    nmi_fa: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def tasks(self) -> int:
        """``T``: the number of tasks recorded."""
        return len(self.class_order)

    @property
    def paths(self) -> list[str]:
        """The modality paths with data, in the order of :data:`PATHS`."""
        return [p for p in PATHS if p in self.matrices]

    # -- validation -------------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise InvalidInputError naming the first inconsistent field; never changes the record."""
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise InvalidInputError("seed", f"must be an integer, got {self.seed!r}")
        tasks = self.tasks
        seen: set[str] = set()
        for t, classes in enumerate(self.class_order):
            if isinstance(classes, str) or not classes:
                raise InvalidInputError(f"class_order[{t}]", "must be a non-empty list of class names")
            for name in classes:
                if not isinstance(name, str) or not name:
                    raise InvalidInputError(f"class_order[{t}]", f"has an invalid class name {name!r}")
                if name in seen:
                    raise InvalidInputError(f"class_order[{t}]", f"class {name!r} was already learned")
                seen.add(name)
        self._check_length("held_out_counts", self.held_out_counts, tasks)
        for t, n in enumerate(self.held_out_counts):
            positive_count(f"held_out_counts[{t}]", n)
        self._check_length("similarities", self.similarities, tasks)
        for t, w in enumerate(self.similarities):
            if w is not None:
                in_range(f"similarities[{t}]", w, 0.0, 1.0)
        if tasks and self.similarities[0] not in (0, 0.0):
            raise InvalidInputError(
                "similarities[0]", f"w_1 is 0 by definition, got {self.similarities[0]!r}"
            )
        for name in ("nmi_fv", "nmi_fa"):
            value = getattr(self, name)
            if value is not None:
                in_range(name, value, 0.0, 1.0)
        for path, matrix in self.matrices.items():
            if path not in PATHS:
                raise InvalidInputError("matrices", f"unknown path {path!r}; paths are {', '.join(PATHS)}")
            if not isinstance(matrix, AccuracyMatrix):
                raise InvalidInputError(f"matrices[{path}]", "must be an AccuracyMatrix")
            if matrix.num_tasks != tasks:
                raise InvalidInputError(
                    f"matrices[{path}]", f"has {matrix.num_tasks} rows, record has {tasks} tasks"
                )
        for mapping_name in ("pooled", "z", "b"):
            for path in getattr(self, mapping_name):
                if path not in self.matrices:
                    raise InvalidInputError(mapping_name, f"has path {path!r}, which has no accuracy matrix")
        for path in self.matrices:
            if path not in self.pooled:
                raise InvalidInputError("pooled", f"missing path {path!r}")
            pooled = self.pooled[path]
            self._check_length(f"pooled[{path}]", pooled, tasks)
            for t, value in enumerate(pooled):
                stored = percent(f"pooled[{path}][{t}]", value)
                expected = pooled_accuracy(self.matrices[path].rows[t], self.held_out_counts[: t + 1])
                if abs(stored - expected) > POOLED_TOLERANCE:
                    raise InvalidInputError(
                        f"pooled[{path}][{t}]",
                        f"is {stored:g} but the sample-weighted matrix row gives {expected:g}",
                    )
            for mapping_name in ("z", "b"):
                values = getattr(self, mapping_name).get(path)
                if values is not None:
                    self._check_length(f"{mapping_name}[{path}]", values, tasks)
                    for t, value in enumerate(values):
                        optional_percent(f"{mapping_name}[{path}][{t}]", value)

    @staticmethod
    def _check_length(field_name: str, values: Any, tasks: int) -> None:
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise InvalidInputError(field_name, f"must be a list, got {type(values).__name__}")
        if len(values) != tasks:
            raise InvalidInputError(field_name, f"has {len(values)} entries, record has {tasks} tasks")

    # -- growing ----------------------------------------------------------------------------------

    def add_task(
        self,
        classes: Sequence[str],
        held_out_count: int,
        accuracies: Mapping[str, Sequence[float]],
        *,
        z: Mapping[str, float | None] | None = None,
        b: Mapping[str, float | None] | None = None,
        similarity: float | None = None,
    ) -> None:
        """Record task ``T + 1``: its classes, held-out count and, per path, the new matrix row.

        ``accuracies[path]`` = ``a[T+1][1..T+1]``; ``A_{T+1}`` is computed from it (sample-weighted).
        ``z``/``b`` map a path to that task's before-training / untrained accuracy (None or absent =
        not measured). ``similarity`` = ``w_{T+1}``; ignored for the first task (``w_1 = 0``). Every
        task must report the same paths. All-or-nothing: on error the record is unchanged.
        """
        if self.tasks and set(accuracies) != set(self.matrices):
            raise InvalidInputError(
                "accuracies", f"has paths {sorted(accuracies)}, earlier tasks have {sorted(self.matrices)}"
            )
        if not accuracies:
            raise InvalidInputError("accuracies", "needs at least one path")
        z, b = dict(z or {}), dict(b or {})
        for name, mapping in (("z", z), ("b", b)):
            extra = set(mapping) - set(accuracies)
            if extra:
                raise InvalidInputError(name, f"has paths {sorted(extra)} without accuracies")
        positive_count("held_out_count", held_out_count)
        for path in accuracies:
            if path not in PATHS:
                raise InvalidInputError("accuracies", f"unknown path {path!r}; paths are {', '.join(PATHS)}")
        counts = [*self.held_out_counts, held_out_count]
        candidate = ContinualRecord.from_dict(self.to_dict())
        candidate.class_order.append(list(classes))
        candidate.held_out_counts.append(held_out_count)
        candidate.similarities.append(0.0 if not self.tasks else similarity)
        for path, row in accuracies.items():
            matrix = candidate.matrices.setdefault(path, AccuracyMatrix())
            try:
                matrix.append_row(row)
            except InvalidInputError as error:
                raise InvalidInputError(f"accuracies[{path}]", error.problem) from None
            candidate.pooled.setdefault(path, []).append(pooled_accuracy(matrix.rows[-1], counts))
            candidate.z.setdefault(path, [None] * (len(counts) - 1)).append(z.get(path))
            candidate.b.setdefault(path, [None] * (len(counts) - 1)).append(b.get(path))
        candidate.validate()
        self.__dict__.update(candidate.__dict__)

    # -- figures ----------------------------------------------------------------------------------

    def figures(self, path: str) -> Figures:
        """All figures of one modality path, recomputed from the stored matrix and lists."""
        self.validate()
        if not self.tasks:
            raise StateError("no task has been recorded yet; figures need at least one")
        if path not in self.matrices:
            raise InvalidInputError("path", f"no data for {path!r}; recorded paths: {self.paths}")
        a = self.matrices[path]
        tasks = self.tasks
        pooled = tuple(self.pooled[path])
        acc_avg = average_accuracy(pooled)
        forgetting_steps = tuple(forgetting_at(a, t) for t in range(1, tasks + 1))
        bwt_steps = tuple(bwt_at(a, t) for t in range(1, tasks + 1))
        z = self.z.get(path, [None] * tasks)
        b = self.b.get(path, [None] * tasks)
        measured = all(z[t] is not None and b[t] is not None for t in range(1, tasks))
        fwt_steps = tuple(fwt_at(z, b, t) for t in range(1, tasks + 1)) if measured else None
        fwt_value = fwt(z, b) if measured else None
        m1_value = None
        if all(w is not None for w in self.similarities):
            m1_value = m1(acc_avg, [float(w) for w in self.similarities if w is not None], forgetting_steps)
        m2_value = None
        if fwt_steps is not None and self.nmi_fv is not None and self.nmi_fa is not None:
            m2_value = m2(acc_avg, bwt_steps, fwt_steps, self.nmi_fv, self.nmi_fa)
        return Figures(
            tasks=tasks,
            average_accuracy=acc_avg,
            last_accuracy=last_accuracy(pooled),
            forgetting=forgetting_steps[-1],
            bwt=bwt_steps[-1],
            fwt=fwt_value,
            m1=m1_value,
            m2=m2_value,
            incremental_accuracy=pooled,
            forgetting_steps=forgetting_steps,
            bwt_steps=bwt_steps,
            fwt_steps=fwt_steps,
        )

    def summary(self) -> dict[str, dict[str, Any]]:
        """``{path: figures as dict}`` for every path with data; ``{}`` before the first task."""
        if not self.tasks:
            return {}
        return {path: self.figures(path).to_dict() for path in self.paths}

    # -- serialisation ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``json.dumps(record.to_dict())`` works; :meth:`from_dict` reads it back."""
        self.validate()
        tasks = self.tasks
        return {
            "format": RECORD_FORMAT,
            "seed": int(self.seed),
            "class_order": [list(classes) for classes in self.class_order],
            "held_out_counts": [int(n) for n in self.held_out_counts],
            "similarities": [None if w is None else float(w) for w in self.similarities],
            "nmi_fv": None if self.nmi_fv is None else float(self.nmi_fv),
            "nmi_fa": None if self.nmi_fa is None else float(self.nmi_fa),
            "paths": {
                path: {
                    "accuracy_matrix": self.matrices[path].to_list(),
                    "pooled": [float(v) for v in self.pooled[path]],
                    "z": _optional_floats(self.z.get(path, [None] * tasks)),
                    "b": _optional_floats(self.b.get(path, [None] * tasks)),
                }
                for path in self.paths
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContinualRecord:
        """Rebuild a record written by :meth:`to_dict`, validating every field."""
        if not isinstance(data, Mapping):
            raise InvalidInputError("record", f"must be a mapping, got {type(data).__name__}")
        for key in ("format", "seed", "class_order", "held_out_counts", "similarities", "paths"):
            if key not in data:
                raise InvalidInputError(f"record.{key}", "is missing")
        if data["format"] != RECORD_FORMAT:
            raise InvalidInputError("record.format", f"unsupported format {data['format']!r}")
        paths = data["paths"]
        if not isinstance(paths, Mapping):
            raise InvalidInputError("record.paths", "must be a mapping of path to its data")
        matrices: dict[str, AccuracyMatrix] = {}
        pooled: dict[str, list[float]] = {}
        z: dict[str, list[float | None]] = {}
        b: dict[str, list[float | None]] = {}
        for path, entry in paths.items():
            for key in ("accuracy_matrix", "pooled", "z", "b"):
                if not isinstance(entry, Mapping) or key not in entry:
                    raise InvalidInputError(f"record.paths.{path}.{key}", "is missing")
            try:
                matrices[path] = AccuracyMatrix([list(row) for row in entry["accuracy_matrix"]])
            except InvalidInputError as error:
                raise InvalidInputError(f"record.paths.{path}.{error.field}", error.problem) from None
            except TypeError:
                field_name = f"record.paths.{path}.accuracy_matrix"
                raise InvalidInputError(field_name, "must be a list of rows") from None
            pooled[path] = list(entry["pooled"])
            z[path] = list(entry["z"])
            b[path] = list(entry["b"])
        return cls(
            seed=data["seed"],
            class_order=[list(classes) for classes in data["class_order"]],
            held_out_counts=list(data["held_out_counts"]),
            matrices=matrices,
            pooled=pooled,
            z=z,
            b=b,
            similarities=list(data["similarities"]),
            nmi_fv=data.get("nmi_fv"),
            nmi_fa=data.get("nmi_fa"),
        )


def _optional_floats(values: Sequence[float | None]) -> list[float | None]:
    return [None if v is None else float(v) for v in values]
