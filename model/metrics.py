"""Continual-learning figures, all derived from one stored object: the accuracy matrix.

docs/metrics.md states every formula; this module is its implementation. Notation (1-indexed, as in
the docs): after training task ``t`` the model is evaluated on the held-out samples of every task
``j <= t``, predicting over all classes seen so far, and ``a[t][j]`` is the top-1 accuracy in percent.
Storage is 0-indexed: ``AccuracyMatrix.rows[t - 1][j - 1] == a[t][j]``; functions that take a step
``t`` take it 1-indexed, like the docs.

    F_t   = 1/(t-1) * sum_{j<t} ( max_{l in [j, t-1]} a[l][j] - a[t][j] )      F_1 = 0
    BWT_t = 1/(t-1) * sum_{j<t} ( a[t][j] - a[j][j] )                         BWT_1 = 0
    FWT_t = z[t] - b[t]  (t >= 2)                                             FWT_1 = 0
    FWT   = 1/(T-1) * sum_{t>=2} FWT_t                                        FWT = 0 when T = 1
    M1    = 1/2 * Acc_avg + 1/(2T) * sum_t (1 - w_t) * (100 - F_t)
    M2    = 1/4 * Acc_avg/100 + 1/(4T) * sum_t (BWT_t + FWT_t)/100 + 1/4 * (NMI_fv + NMI_fa)

:class:`ContinualRecord` holds everything one run produces (per modality path: ``av``, ``visual``,
``audio``) and turns it into :class:`Figures`. Everything here is plain Python and numpy; callers
convert tensors with ``tensor.cpu().numpy()``. Bad input raises
:class:`~model.errors.InvalidInputError` naming the field, and leaves objects unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from model.errors import InvalidInputError, StateError

PATHS: tuple[str, ...] = ("av", "visual", "audio")
"""Modality paths: ``av`` = both inputs through the fusion module, ``visual`` = image only,
``audio`` = audio only (the fusion module's single-modality path)."""

RECORD_FORMAT = 1
"""Version of the dict written by :meth:`ContinualRecord.to_dict`."""

POOLED_TOLERANCE = 1e-6
"""How far (in percentage points) a stored ``A_t`` may be from the sample-weighted row of the matrix."""

KMEANS_N_INIT = 10
"""k-means restarts used by :func:`clustering_nmi` (fixed, so the figure only depends on the seed)."""


# ----------------------------------------------------------------------------------------------------
# Validation helpers


def _number(field_name: str, value: Any) -> float:
    """``value`` as a finite float, or an InvalidInputError naming ``field_name``."""
    if isinstance(value, bool):
        raise InvalidInputError(field_name, f"must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(field_name, f"must be a number, got {value!r}") from None
    if math.isnan(number):
        raise InvalidInputError(field_name, "is NaN")
    if math.isinf(number):
        raise InvalidInputError(field_name, "is infinite")
    return number


def _in_range(field_name: str, value: Any, low: float, high: float) -> float:
    number = _number(field_name, value)
    if not low <= number <= high:
        raise InvalidInputError(field_name, f"must be in [{low:g}, {high:g}], got {number:g}")
    return number


def _percent(field_name: str, value: Any) -> float:
    return _in_range(field_name, value, 0.0, 100.0)


def _optional_percent(field_name: str, value: Any) -> float | None:
    return None if value is None else _percent(field_name, value)


def _step(field_name: str, t: Any, tasks: int) -> int:
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
        raise InvalidInputError(field_name, f"must be an integer task number, got {t!r}")
    if not 1 <= t <= tasks:
        raise InvalidInputError(field_name, f"must be in [1, {tasks}] (tasks are numbered from 1), got {t}")
    return int(t)


# ----------------------------------------------------------------------------------------------------
# The accuracy matrix


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
        if isinstance(self.rows, (str, bytes)) or not isinstance(self.rows, Sequence):
            raise InvalidInputError("rows", f"must be a list of rows, got {type(self.rows).__name__}")
        checked = [self._checked_row(f"rows[{i}]", row, i + 1) for i, row in enumerate(self.rows)]
        self.rows = checked

    @staticmethod
    def _checked_row(field_name: str, row: Any, length: int) -> list[float]:
        if isinstance(row, (str, bytes)) or not isinstance(row, (Sequence, np.ndarray)):
            raise InvalidInputError(field_name, f"must be a list of accuracies, got {type(row).__name__}")
        if len(row) != length:
            raise InvalidInputError(
                field_name, f"must have {length} entries (one per task seen so far), got {len(row)}"
            )
        return [_percent(f"{field_name}[{j}]", value) for j, value in enumerate(row)]

    @property
    def num_tasks(self) -> int:
        """``T``: the number of tasks trained so far (rows stored)."""
        return len(self.rows)

    def append_row(self, row: Sequence[float]) -> None:
        """Store ``a[T+1][1..T+1]`` (percent) after training one more task."""
        self.rows.append(self._checked_row("row", row, self.num_tasks + 1))

    def value(self, t: int, j: int) -> float:
        """``a[t][j]`` with the docs' 1-indexed task numbers (``j <= t``)."""
        t = _step("t", t, self.num_tasks)
        j = _step("j", j, t)
        return self.rows[t - 1][j - 1]

    def to_list(self) -> list[list[float]]:
        return [list(row) for row in self.rows]


def _matrix(a: AccuracyMatrix | Sequence[Sequence[float]]) -> AccuracyMatrix:
    return a if isinstance(a, AccuracyMatrix) else AccuracyMatrix([list(row) for row in a])


# ----------------------------------------------------------------------------------------------------
# Accuracy


def accuracy(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """Top-1 accuracy in percent: the share of positions where ``predicted`` equals ``truth``."""
    if len(predicted) != len(truth):
        raise InvalidInputError("predicted", f"has {len(predicted)} labels but truth has {len(truth)}")
    if not truth:
        raise InvalidInputError("truth", "is empty; accuracy of no samples is undefined")
    correct = sum(p == y for p, y in zip(predicted, truth))
    return 100.0 * correct / len(truth)


def pooled_accuracy(row: Sequence[float], held_out_counts: Sequence[int]) -> float:
    """``A_t`` from the matrix row ``a[t][1..t]`` and the held-out sample count of each task.

    Sample-weighted: ``sum_j n_j * a[t][j] / sum_j n_j``, which equals the accuracy over the pooled
    held-out samples of all seen tasks.
    """
    if len(row) != len(held_out_counts):
        raise InvalidInputError("held_out_counts", f"has {len(held_out_counts)} entries, row has {len(row)}")
    if not row:
        raise InvalidInputError("row", "is empty")
    values = [_percent(f"row[{j}]", v) for j, v in enumerate(row)]
    counts = [_count(f"held_out_counts[{j}]", n) for j, n in enumerate(held_out_counts)]
    return sum(n * v for n, v in zip(counts, values)) / sum(counts)


def _count(field_name: str, n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidInputError(field_name, f"must be a positive integer, got {n!r}")
    return int(n)


def average_accuracy(pooled: Sequence[float]) -> float:
    """``Acc_avg = (1/T) * sum_t A_t`` over the pooled accuracies ``A_1..A_T``."""
    values = _pooled(pooled)
    return sum(values) / len(values)


def last_accuracy(pooled: Sequence[float]) -> float:
    """``A_T``: the pooled accuracy after the last task."""
    return _pooled(pooled)[-1]


def _pooled(pooled: Sequence[float]) -> list[float]:
    if not pooled:
        raise InvalidInputError("pooled", "is empty; no task has been evaluated")
    return [_percent(f"pooled[{i}]", v) for i, v in enumerate(pooled)]


# ----------------------------------------------------------------------------------------------------
# Forgetting, backward and forward transfer


def forgetting_at(a: AccuracyMatrix | Sequence[Sequence[float]], t: int) -> float:
    """``F_t`` (Chaudhry et al.): mean over old tasks of best past accuracy minus accuracy now.

    The best past accuracy on task ``j`` is the maximum over every step from ``j`` to ``t - 1``, not
    the accuracy right after training ``j``. ``F_1 = 0``. Negative when old tasks improved.
    """
    a = _matrix(a)
    t = _step("t", t, a.num_tasks)
    if t == 1:
        return 0.0
    now = a.rows[t - 1]
    drops = [max(a.rows[step][j] for step in range(j, t - 1)) - now[j] for j in range(t - 1)]
    return sum(drops) / (t - 1)


def forgetting(a: AccuracyMatrix | Sequence[Sequence[float]]) -> float:
    """``F = F_T``."""
    a = _matrix(a)
    return forgetting_at(a, _step("a.num_tasks", a.num_tasks, a.num_tasks))


def bwt_at(a: AccuracyMatrix | Sequence[Sequence[float]], t: int) -> float:
    """``BWT_t`` (Lopez-Paz and Ranzato): mean over ``j < t`` of ``a[t][j] - a[j][j]``; ``BWT_1 = 0``.

    Uses row ``t`` only, not an average over all pairs of earlier rows.
    """
    a = _matrix(a)
    t = _step("t", t, a.num_tasks)
    if t == 1:
        return 0.0
    now = a.rows[t - 1]
    return sum(now[j] - a.rows[j][j] for j in range(t - 1)) / (t - 1)


def bwt(a: AccuracyMatrix | Sequence[Sequence[float]]) -> float:
    """``BWT = BWT_T``."""
    a = _matrix(a)
    return bwt_at(a, _step("a.num_tasks", a.num_tasks, a.num_tasks))


def fwt_at(z: Sequence[float | None], b: Sequence[float | None], t: int) -> float:
    """``FWT_t = z[t] - b[t]`` for ``t >= 2``; ``FWT_1 = 0``.

    ``z[t - 1]`` (0-indexed storage) is the accuracy on task ``t`` after training tasks ``1..t-1``,
    with task ``t``'s classes added to the candidate set but not trained; ``b[t - 1]`` is the same with
    the untrained model. Entries not needed (task 1) may be ``None``.
    """
    if len(z) != len(b):
        raise InvalidInputError("b", f"has {len(b)} entries but z has {len(z)}")
    t = _step("t", t, len(z))
    if t == 1:
        return 0.0
    zt = _optional_percent(f"z[{t - 1}]", z[t - 1])
    bt = _optional_percent(f"b[{t - 1}]", b[t - 1])
    if zt is None or bt is None:
        missing = "z" if zt is None else "b"
        raise InvalidInputError(f"{missing}[{t - 1}]", f"was not measured; FWT_{t} needs it")
    return zt - bt


def fwt(z: Sequence[float | None], b: Sequence[float | None]) -> float:
    """``FWT = 1/(T-1) * sum_{t>=2} FWT_t``; defined as 0 when ``T = 1`` (nothing to transfer to)."""
    if not z:
        raise InvalidInputError("z", "is empty; no task has been evaluated")
    steps = [fwt_at(z, b, t) for t in range(1, len(z) + 1)]
    return 0.0 if len(z) == 1 else sum(steps[1:]) / (len(z) - 1)


# ----------------------------------------------------------------------------------------------------
# Task similarity w_t (input of M1)


def task_similarity(semantic_cosine: float, feature_cosine: float) -> float:
    """``w_t = ((s_sem + s_feat) / 2 + 1) / 2``, clipped to [0, 1] against rounding.

    Both cosines must lie in [-1, 1] (up to 1e-6 of rounding). 1 = the new task points the same way
    as the earlier ones at both levels; 0.5 = orthogonal; 0 = opposite.
    """
    s_sem = _in_range("semantic_cosine", semantic_cosine, -1.0 - 1e-6, 1.0 + 1e-6)
    s_feat = _in_range("feature_cosine", feature_cosine, -1.0 - 1e-6, 1.0 + 1e-6)
    return min(1.0, max(0.0, ((s_sem + s_feat) / 2.0 + 1.0) / 2.0))


def _cosine(field_name: str, u: np.ndarray, v: np.ndarray) -> float:
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if nu == 0.0 or nv == 0.0:
        raise InvalidInputError(field_name, "a mean vector is zero; cosine similarity is undefined")
    return float(np.dot(u, v) / (nu * nv))


def _vectors(field_name: str, value: Any, dim: int | None) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 1:
        raise InvalidInputError(field_name, f"must be a non-empty (N, D) array, got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise InvalidInputError(field_name, f"has width {array.shape[1]}, earlier tasks have {dim}")
    if not np.isfinite(array).all():
        raise InvalidInputError(field_name, "contains NaN or infinite values")
    return array


def task_similarities(
    class_prototypes_per_task: Sequence[np.ndarray], visual_features_per_task: Sequence[np.ndarray]
) -> list[float]:
    """``[w_1, ..., w_T]`` from each task's class prototypes and visual training features.

    ``class_prototypes_per_task[t - 1]``: (C_t, D) text prototypes of task ``t``'s classes.
    ``visual_features_per_task[t - 1]``: (N_t, D') visual features of task ``t``'s training samples.

    For ``t >= 2``: ``s_sem`` = cosine between the mean prototype of task ``t``'s classes and the mean
    over all earlier tasks' classes (pooled over classes); ``s_feat`` = cosine between the mean visual
    feature of task ``t``'s samples and the mean over all earlier tasks' samples (pooled over samples,
    so a task with more samples weighs more). ``w_1 = 0``.
    """
    if len(class_prototypes_per_task) != len(visual_features_per_task):
        raise InvalidInputError(
            "visual_features_per_task",
            f"has {len(visual_features_per_task)} tasks, class_prototypes_per_task has "
            f"{len(class_prototypes_per_task)}",
        )
    prototypes: list[np.ndarray] = []  # each (C_t, D)
    features: list[np.ndarray] = []  # each (N_t, D')
    for t, (p, f) in enumerate(zip(class_prototypes_per_task, visual_features_per_task)):
        prototypes.append(
            _vectors(f"class_prototypes_per_task[{t}]", p, prototypes[0].shape[1] if prototypes else None)
        )
        features.append(
            _vectors(f"visual_features_per_task[{t}]", f, features[0].shape[1] if features else None)
        )
    weights = [0.0] if prototypes else []
    for t in range(1, len(prototypes)):
        s_sem = _cosine(
            f"class_prototypes_per_task[{t}]",
            prototypes[t].mean(axis=0),  # (D,)
            np.concatenate(prototypes[:t]).mean(axis=0),  # (D,) mean over all earlier classes
        )
        s_feat = _cosine(
            f"visual_features_per_task[{t}]",
            features[t].mean(axis=0),  # (D',)
            np.concatenate(features[:t]).mean(axis=0),  # (D',) mean over all earlier samples
        )
        weights.append(task_similarity(s_sem, s_feat))
    return weights


# ----------------------------------------------------------------------------------------------------
# The two MCIL metrics


def m1(acc_avg: float, similarities: Sequence[float], forgetting_steps: Sequence[float]) -> float:
    """``M1 = 1/2 * Acc_avg + 1/(2T) * sum_t (1 - w_t) * (100 - F_t)``.

    ``similarities`` = ``[w_1..w_T]`` (``w_1 = 0``), ``forgetting_steps`` = ``[F_1..F_T]``. In [0, 100]
    when every ``F_t >= 0``; a negative ``F_t`` (old tasks improved) can lift it slightly above 100.
    """
    acc = _percent("acc_avg", acc_avg)
    if len(similarities) != len(forgetting_steps):
        raise InvalidInputError(
            "similarities", f"has {len(similarities)} entries, forgetting_steps has {len(forgetting_steps)}"
        )
    if not similarities:
        raise InvalidInputError("similarities", "is empty; M1 needs at least one task")
    w = [_in_range(f"similarities[{i}]", v, 0.0, 1.0) for i, v in enumerate(similarities)]
    f = [_in_range(f"forgetting_steps[{i}]", v, -100.0, 100.0) for i, v in enumerate(forgetting_steps)]
    tasks = len(w)
    return 0.5 * acc + sum((1.0 - wt) * (100.0 - ft) for wt, ft in zip(w, f)) / (2 * tasks)


def m2(
    acc_avg: float,
    bwt_steps: Sequence[float],
    fwt_steps: Sequence[float],
    nmi_fv: float,
    nmi_fa: float,
) -> float:
    """``M2 = 1/4 * Acc_avg/100 + 1/(4T) * sum_t (BWT_t/100 + FWT_t/100) + 1/4 * (NMI_fv + NMI_fa)``.

    Taken literally from the seed paper and not clipped: usually in [0, 1], but it need not be.
    """
    acc = _percent("acc_avg", acc_avg)
    if len(bwt_steps) != len(fwt_steps):
        raise InvalidInputError("fwt_steps", f"has {len(fwt_steps)} entries, bwt_steps has {len(bwt_steps)}")
    if not bwt_steps:
        raise InvalidInputError("bwt_steps", "is empty; M2 needs at least one task")
    bw = [_in_range(f"bwt_steps[{i}]", v, -100.0, 100.0) for i, v in enumerate(bwt_steps)]
    fw = [_in_range(f"fwt_steps[{i}]", v, -100.0, 100.0) for i, v in enumerate(fwt_steps)]
    nfv = _in_range("nmi_fv", nmi_fv, 0.0, 1.0)
    nfa = _in_range("nmi_fa", nmi_fa, 0.0, 1.0)
    tasks = len(bw)
    transfer = sum(b / 100.0 + f / 100.0 for b, f in zip(bw, fw))
    return 0.25 * acc / 100.0 + transfer / (4 * tasks) + 0.25 * (nfv + nfa)


def clustering_nmi(fused: np.ndarray, other: np.ndarray, k: int, seed: int = 0) -> float:
    """NMI between k-means clusterings of two feature sets of the same samples.

    ``fused``: (N, D) fused features; ``other``: (N, D') visual or audio features of the same N
    held-out samples, in the same order. Each set is clustered by k-means (``k`` = number of seen
    classes, ``random_state=seed``, ``n_init=KMEANS_N_INIT``); the result is scikit-learn's
    ``normalized_mutual_info_score`` (arithmetic normalisation) of the two label assignments, in [0, 1].
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    x = _vectors("fused", fused, None)  # (N, D)
    y = _vectors("other", other, None)  # (N, D')
    if x.shape[0] != y.shape[0]:
        raise InvalidInputError("other", f"has {y.shape[0]} samples, fused has {x.shape[0]}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= x.shape[0]:
        raise InvalidInputError("k", f"must be an integer in [1, {x.shape[0]}] (samples), got {k!r}")
    labels = [
        KMeans(n_clusters=int(k), n_init=KMEANS_N_INIT, random_state=seed).fit_predict(features)
        for features in (x, y)
    ]
    return float(np.clip(normalized_mutual_info_score(labels[0], labels[1]), 0.0, 1.0))


# ----------------------------------------------------------------------------------------------------
# One run's record and its figures


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
            _count(f"held_out_counts[{t}]", n)
        self._check_length("similarities", self.similarities, tasks)
        for t, w in enumerate(self.similarities):
            if w is not None:
                _in_range(f"similarities[{t}]", w, 0.0, 1.0)
        if tasks and self.similarities[0] not in (0, 0.0):
            raise InvalidInputError(
                "similarities[0]", f"w_1 is 0 by definition, got {self.similarities[0]!r}"
            )
        for name in ("nmi_fv", "nmi_fa"):
            value = getattr(self, name)
            if value is not None:
                _in_range(name, value, 0.0, 1.0)
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
                stored = _percent(f"pooled[{path}][{t}]", value)
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
                        _optional_percent(f"{mapping_name}[{path}][{t}]", value)

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
        _count("held_out_count", held_out_count)
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
            candidate.pooled.setdefault(path, []).append(pooled_accuracy(matrix.rows[-1], _counts(counts)))
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


def _counts(counts: Sequence[Any]) -> list[int]:
    return [_count(f"held_out_counts[{t}]", n) for t, n in enumerate(counts)]
