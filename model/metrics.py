"""Continual-learning formulas: accuracy, forgetting, transfer, task similarity, M1, M2, NMI.

docs/metrics.md states every formula; this module is its implementation, as plain functions of plain
numbers (no state). Notation (1-indexed, as in the docs): after training task ``t`` the model is
evaluated on the held-out samples of every task ``j <= t``, predicting over all classes seen so far,
and ``a[t][j]`` is the top-1 accuracy in percent. Storage is 0-indexed: ``rows[t - 1][j - 1] ==
a[t][j]`` (see :class:`model.record.AccuracyMatrix`); functions that take a step ``t`` take it
1-indexed, like the docs.

    F_t   = 1/(t-1) * sum_{j<t} ( max_{l in [j, t-1]} a[l][j] - a[t][j] )      F_1 = 0
    BWT_t = 1/(t-1) * sum_{j<t} ( a[t][j] - a[j][j] )                         BWT_1 = 0
    FWT_t = z[t] - b[t]  (t >= 2)                                             FWT_1 = 0
    FWT   = 1/(T-1) * sum_{t>=2} FWT_t                                        FWT = 0 when T = 1
    M1    = 1/2 * Acc_avg + 1/(2T) * sum_t (1 - w_t) * (100 - F_t)
    M2    = 1/4 * Acc_avg/100 + 1/(4T) * sum_t (BWT_t + FWT_t)/100 + 1/4 * (NMI_fv + NMI_fa)

The stored side (one run's accuracy matrices and measurements, and the :class:`~model.record.Figures`
computed from them) lives in :mod:`model.record`, which calls these functions; nothing here imports it.
A matrix argument is either a list of rows (validated here) or an already-validated
:class:`~model.record.AccuracyMatrix` (anything with ``rows``, see :class:`StoredMatrix`).

Everything here is plain Python and numpy; callers convert tensors with ``tensor.cpu().numpy()``. Bad
input raises :class:`~model.errors.InvalidInputError` naming the field. The validators
(:func:`in_range`, :func:`percent`, :func:`optional_percent`, :func:`positive_count`,
:func:`task_number`, :func:`matrix_row`, :func:`matrix_rows`) are public because the record checks its
fields with the same rules.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from model.errors import InvalidInputError

KMEANS_N_INIT = 10
"""k-means restarts used by :func:`clustering_nmi` (fixed, so the figure only depends on the seed)."""


# ----------------------------------------------------------------------------------------------------
# Validation helpers (shared with model.record)


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


def in_range(field_name: str, value: Any, low: float, high: float) -> float:
    """``value`` as a float in ``[low, high]``, or an InvalidInputError naming ``field_name``."""
    number = _number(field_name, value)
    if not low <= number <= high:
        raise InvalidInputError(field_name, f"must be in [{low:g}, {high:g}], got {number:g}")
    return number


def percent(field_name: str, value: Any) -> float:
    """``value`` as a float in [0, 100]."""
    return in_range(field_name, value, 0.0, 100.0)


def optional_percent(field_name: str, value: Any) -> float | None:
    """None (not measured) or :func:`percent`."""
    return None if value is None else percent(field_name, value)


def positive_count(field_name: str, n: Any) -> int:
    """``n`` as an int >= 1 (a sample count)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidInputError(field_name, f"must be a positive integer, got {n!r}")
    return int(n)


def task_number(field_name: str, t: Any, tasks: int) -> int:
    """``t`` as a 1-indexed task number in ``[1, tasks]``."""
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
        raise InvalidInputError(field_name, f"must be an integer task number, got {t!r}")
    if not 1 <= t <= tasks:
        raise InvalidInputError(field_name, f"must be in [1, {tasks}] (tasks are numbered from 1), got {t}")
    return int(t)


# ----------------------------------------------------------------------------------------------------
# Accuracy matrices as input


@runtime_checkable
class StoredMatrix(Protocol):
    """A matrix whose ``rows`` were validated when stored (:class:`model.record.AccuracyMatrix`)."""

    @property
    def rows(self) -> list[list[float]]: ...


def matrix_row(field_name: str, row: Any, length: int) -> list[float]:
    """One row ``a[t][1..t]`` (``length == t`` accuracies in percent) as a list of floats."""
    if isinstance(row, (str, bytes)) or not isinstance(row, (Sequence, np.ndarray)):
        raise InvalidInputError(field_name, f"must be a list of accuracies, got {type(row).__name__}")
    if len(row) != length:
        raise InvalidInputError(
            field_name, f"must have {length} entries (one per task seen so far), got {len(row)}"
        )
    return [percent(f"{field_name}[{j}]", value) for j, value in enumerate(row)]


def matrix_rows(rows: Any) -> list[list[float]]:
    """A whole lower-triangular matrix: row ``i`` (0-indexed) must have ``i + 1`` accuracies.

    Errors name the field ``rows`` (``rows[i]``, ``rows[i][j]``)."""
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
        raise InvalidInputError("rows", f"must be a list of rows, got {type(rows).__name__}")
    return [matrix_row(f"rows[{i}]", row, i + 1) for i, row in enumerate(rows)]


def _rows(a: StoredMatrix | Sequence[Sequence[float]]) -> list[list[float]]:
    """The rows of a stored matrix as they are, or a list of rows validated by :func:`matrix_rows`."""
    return a.rows if isinstance(a, StoredMatrix) else matrix_rows([list(row) for row in a])


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
    values = [percent(f"row[{j}]", v) for j, v in enumerate(row)]
    counts = [positive_count(f"held_out_counts[{j}]", n) for j, n in enumerate(held_out_counts)]
    return sum(n * v for n, v in zip(counts, values)) / sum(counts)


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
    return [percent(f"pooled[{i}]", v) for i, v in enumerate(pooled)]


# ----------------------------------------------------------------------------------------------------
# Forgetting, backward and forward transfer


def forgetting_at(a: StoredMatrix | Sequence[Sequence[float]], t: int) -> float:
    """``F_t`` (Chaudhry et al.): mean over old tasks of best past accuracy minus accuracy now.

    The best past accuracy on task ``j`` is the maximum over every step from ``j`` to ``t - 1``, not
    the accuracy right after training ``j``. ``F_1 = 0``. Negative when old tasks improved.
    """
    rows = _rows(a)
    t = task_number("t", t, len(rows))
    if t == 1:
        return 0.0
    now = rows[t - 1]
    drops = [max(rows[step][j] for step in range(j, t - 1)) - now[j] for j in range(t - 1)]
    return sum(drops) / (t - 1)


def forgetting(a: StoredMatrix | Sequence[Sequence[float]]) -> float:
    """``F = F_T``."""
    rows = _rows(a)
    return forgetting_at(rows, task_number("a.num_tasks", len(rows), len(rows)))


def bwt_at(a: StoredMatrix | Sequence[Sequence[float]], t: int) -> float:
    """``BWT_t`` (Lopez-Paz and Ranzato): mean over ``j < t`` of ``a[t][j] - a[j][j]``; ``BWT_1 = 0``.

    Uses row ``t`` only, not an average over all pairs of earlier rows.
    """
    rows = _rows(a)
    t = task_number("t", t, len(rows))
    if t == 1:
        return 0.0
    now = rows[t - 1]
    return sum(now[j] - rows[j][j] for j in range(t - 1)) / (t - 1)


def bwt(a: StoredMatrix | Sequence[Sequence[float]]) -> float:
    """``BWT = BWT_T``."""
    rows = _rows(a)
    return bwt_at(rows, task_number("a.num_tasks", len(rows), len(rows)))


def fwt_at(z: Sequence[float | None], b: Sequence[float | None], t: int) -> float:
    """``FWT_t = z[t] - b[t]`` for ``t >= 2``; ``FWT_1 = 0``.

    ``z[t - 1]`` (0-indexed storage) is the accuracy on task ``t`` after training tasks ``1..t-1``,
    with task ``t``'s classes added to the candidate set but not trained; ``b[t - 1]`` is the same with
    the untrained model. Entries not needed (task 1) may be ``None``.
    """
    if len(z) != len(b):
        raise InvalidInputError("b", f"has {len(b)} entries but z has {len(z)}")
    t = task_number("t", t, len(z))
    if t == 1:
        return 0.0
    zt = optional_percent(f"z[{t - 1}]", z[t - 1])
    bt = optional_percent(f"b[{t - 1}]", b[t - 1])
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
    s_sem = in_range("semantic_cosine", semantic_cosine, -1.0 - 1e-6, 1.0 + 1e-6)
    s_feat = in_range("feature_cosine", feature_cosine, -1.0 - 1e-6, 1.0 + 1e-6)
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
    acc = percent("acc_avg", acc_avg)
    if len(similarities) != len(forgetting_steps):
        raise InvalidInputError(
            "similarities", f"has {len(similarities)} entries, forgetting_steps has {len(forgetting_steps)}"
        )
    if not similarities:
        raise InvalidInputError("similarities", "is empty; M1 needs at least one task")
    w = [in_range(f"similarities[{i}]", v, 0.0, 1.0) for i, v in enumerate(similarities)]
    f = [in_range(f"forgetting_steps[{i}]", v, -100.0, 100.0) for i, v in enumerate(forgetting_steps)]
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
    acc = percent("acc_avg", acc_avg)
    if len(bwt_steps) != len(fwt_steps):
        raise InvalidInputError("fwt_steps", f"has {len(fwt_steps)} entries, bwt_steps has {len(bwt_steps)}")
    if not bwt_steps:
        raise InvalidInputError("bwt_steps", "is empty; M2 needs at least one task")
    bw = [in_range(f"bwt_steps[{i}]", v, -100.0, 100.0) for i, v in enumerate(bwt_steps)]
    fw = [in_range(f"fwt_steps[{i}]", v, -100.0, 100.0) for i, v in enumerate(fwt_steps)]
    nfv = in_range("nmi_fv", nmi_fv, 0.0, 1.0)
    nfa = in_range("nmi_fa", nmi_fa, 0.0, 1.0)
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
