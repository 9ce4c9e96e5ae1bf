"""Tests for model.metrics and model.record: every expected value is worked out by hand in the comments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from model.errors import InvalidInputError, StateError
from model.metrics import (
    accuracy,
    average_accuracy,
    bwt,
    bwt_at,
    clustering_nmi,
    forgetting,
    forgetting_at,
    fwt,
    fwt_at,
    last_accuracy,
    m1,
    m2,
    pooled_accuracy,
    task_similarities,
    task_similarity,
)
from model.record import AccuracyMatrix, ContinualRecord, Figures

# A 3-task matrix where task 1 got BETTER while learning task 2 (60 -> 75) and then dropped to 45:
#
#            j=1   j=2   j=3
#   a[1] = [ 60 ]
#   a[2] = [ 75,   80 ]
#   a[3] = [ 45,   50,   85 ]
#
# so the best past accuracy on task 1 (75, after task 2) differs from the accuracy right after
# training it (60), and Chaudhry forgetting differs from the naive "a[j][j] - a[T][j]".
ROWS = [[60.0], [75.0, 80.0], [45.0, 50.0, 85.0]]


# ---------------------------------------------------------------------------------------------------
# AccuracyMatrix


def test_matrix_grows_row_by_row_and_reads_one_indexed() -> None:
    a = AccuracyMatrix()
    for row in ROWS:
        a.append_row(row)
    assert a.num_tasks == 3
    assert a.rows == ROWS
    assert a.value(2, 1) == 75.0  # a[2][1]
    assert a.value(3, 3) == 85.0


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ([60.0, 70.0], "must have 1 entries"),  # first row has exactly one entry
        ([], "must have 1 entries"),
        ([100.5], "must be in [0, 100]"),
        ([-0.1], "must be in [0, 100]"),
        ([float("nan")], "is NaN"),
        (["sixty"], "must be a number"),
    ],
)
def test_append_row_rejects_bad_rows_and_keeps_the_matrix(row: list, problem: str) -> None:
    a = AccuracyMatrix()
    with pytest.raises(InvalidInputError, match="row") as info:
        a.append_row(row)
    assert problem in str(info.value)
    assert info.value.field.startswith("row")
    assert isinstance(info.value, ValueError)
    assert a.rows == []  # no state change


def test_append_row_length_follows_the_number_of_tasks() -> None:
    a = AccuracyMatrix([[60.0], [75.0, 80.0]])
    with pytest.raises(InvalidInputError, match="must have 3 entries"):
        a.append_row([50.0, 50.0])
    assert a.num_tasks == 2


def test_matrix_constructor_validates_every_row() -> None:
    with pytest.raises(InvalidInputError) as info:
        AccuracyMatrix([[60.0], [75.0, float("nan")]])
    assert info.value.field == "rows[1][1]"
    with pytest.raises(InvalidInputError) as info:
        AccuracyMatrix([[60.0, 1.0]])
    assert info.value.field == "rows[0]"


def test_value_rejects_steps_outside_the_matrix() -> None:
    a = AccuracyMatrix(ROWS)
    with pytest.raises(InvalidInputError, match="t"):
        a.value(0, 1)
    with pytest.raises(InvalidInputError, match="j"):
        a.value(2, 3)  # upper triangle is not stored


# ---------------------------------------------------------------------------------------------------
# Accuracy


def test_accuracy_is_percent_of_exact_matches() -> None:
    # 3 of 4 right -> 75 %
    assert accuracy(["cat", "dog", "cat", "bird"], ["cat", "dog", "dog", "bird"]) == 75.0
    assert accuracy(["a"], ["b"]) == 0.0


def test_accuracy_rejects_mismatched_or_empty_inputs() -> None:
    with pytest.raises(InvalidInputError, match="predicted"):
        accuracy(["a", "b"], ["a"])
    with pytest.raises(InvalidInputError, match="truth"):
        accuracy([], [])


def test_pooled_accuracy_is_sample_weighted() -> None:
    # Row a[2] = [75, 80] with 100 and 300 held-out samples:
    # (100 * 75 + 300 * 80) / 400 = (7500 + 24000) / 400 = 78.75  (the unweighted mean would be 77.5)
    assert pooled_accuracy([75.0, 80.0], [100, 300]) == pytest.approx(78.75)
    with pytest.raises(InvalidInputError, match="held_out_counts"):
        pooled_accuracy([75.0, 80.0], [100])
    with pytest.raises(InvalidInputError, match=r"held_out_counts\[1\]"):
        pooled_accuracy([75.0, 80.0], [100, 0])


def test_average_and_last_accuracy() -> None:
    # A = [60, 77.5, 60]: mean = 197.5 / 3 = 65.8333..., last = 60
    assert average_accuracy([60.0, 77.5, 60.0]) == pytest.approx(197.5 / 3)
    assert last_accuracy([60.0, 77.5, 60.0]) == 60.0
    with pytest.raises(InvalidInputError, match="pooled"):
        average_accuracy([])
    with pytest.raises(InvalidInputError, match=r"pooled\[1\]"):
        last_accuracy([50.0, 101.0])


# ---------------------------------------------------------------------------------------------------
# Forgetting


def test_forgetting_uses_best_past_accuracy_not_accuracy_after_training() -> None:
    # F_1 = 0 by definition.
    # F_2 = max(a[1][1]) - a[2][1] = 60 - 75 = -15   (task 1 improved: negative forgetting)
    # F_3: j=1: max(a[1][1], a[2][1]) - a[3][1] = max(60, 75) - 45 = 30
    #      j=2: max(a[2][2]) - a[3][2]          = 80 - 50          = 30
    #      F_3 = (30 + 30) / 2 = 30
    # The naive version (a[j][j] - a[3][j]) would give ((60 - 45) + (80 - 50)) / 2 = 22.5.
    a = AccuracyMatrix(ROWS)
    assert forgetting_at(a, 1) == 0.0
    assert forgetting_at(a, 2) == pytest.approx(-15.0)
    assert forgetting_at(a, 3) == pytest.approx(30.0)
    assert forgetting(a) == pytest.approx(30.0)
    assert forgetting(a) != pytest.approx(22.5)


def test_forgetting_when_best_is_right_after_training() -> None:
    # a[1] = [90]; a[2] = [60, 80]; a[3] = [70, 50, 85]
    # F_2 = 90 - 60 = 30
    # F_3: j=1: max(90, 60) - 70 = 20; j=2: 80 - 50 = 30 -> (20 + 30) / 2 = 25
    # Task 1 recovered from 60 to 70 but its best is still the 90 right after training.
    rows = [[90.0], [60.0, 80.0], [70.0, 50.0, 85.0]]
    assert forgetting_at(rows, 2) == pytest.approx(30.0)
    assert forgetting(rows) == pytest.approx(25.0)


def test_forgetting_rejects_steps_outside_the_matrix() -> None:
    with pytest.raises(InvalidInputError, match=r"t: must be in \[1, 3\]"):
        forgetting_at(ROWS, 4)
    with pytest.raises(InvalidInputError, match="t"):
        forgetting_at(ROWS, 0)
    with pytest.raises(InvalidInputError):
        forgetting(AccuracyMatrix())  # no task yet


# ---------------------------------------------------------------------------------------------------
# Backward transfer


def test_bwt_uses_the_last_row_only() -> None:
    # BWT_1 = 0
    # BWT_2 = a[2][1] - a[1][1] = 75 - 60 = 15
    # BWT_3 = ((a[3][1] - a[1][1]) + (a[3][2] - a[2][2])) / 2 = ((45 - 60) + (50 - 80)) / 2 = -22.5
    # Averaging over all pairs (t, j<t) instead would give (15 - 15 - 30) / 3 = -10.
    a = AccuracyMatrix(ROWS)
    assert bwt_at(a, 1) == 0.0
    assert bwt_at(a, 2) == pytest.approx(15.0)
    assert bwt_at(a, 3) == pytest.approx(-22.5)
    assert bwt(a) == pytest.approx(-22.5)
    assert bwt(a) != pytest.approx(-10.0)


def test_single_task_conventions() -> None:
    a = AccuracyMatrix([[42.0]])
    assert forgetting(a) == 0.0
    assert bwt(a) == 0.0
    assert fwt([None], [10.0]) == 0.0  # T = 1: FWT defined as 0


# ---------------------------------------------------------------------------------------------------
# Forward transfer


def test_fwt_from_z_and_b() -> None:
    # z (before training each task) = [-, 20, 30], b (untrained model) = [10, 12, 9]
    # FWT_1 = 0; FWT_2 = 20 - 12 = 8; FWT_3 = 30 - 9 = 21
    # FWT = (8 + 21) / (3 - 1) = 14.5   (task 1 is not in the average)
    z = [None, 20.0, 30.0]
    b = [10.0, 12.0, 9.0]
    assert fwt_at(z, b, 1) == 0.0
    assert fwt_at(z, b, 2) == pytest.approx(8.0)
    assert fwt_at(z, b, 3) == pytest.approx(21.0)
    assert fwt(z, b) == pytest.approx(14.5)


def test_fwt_needs_measured_entries() -> None:
    with pytest.raises(InvalidInputError, match=r"z\[1\]: was not measured"):
        fwt_at([None, None], [10.0, 12.0], 2)
    with pytest.raises(InvalidInputError, match=r"b\[1\]"):
        fwt([None, 20.0], [10.0, None])
    with pytest.raises(InvalidInputError, match="b"):
        fwt([None, 20.0], [10.0])
    with pytest.raises(InvalidInputError, match=r"z\[1\]: must be in"):
        fwt_at([None, 120.0], [10.0, 12.0], 2)


# ---------------------------------------------------------------------------------------------------
# Task similarity


def test_task_similarity_linear_map_and_validation() -> None:
    # ((1 + 0) / 2 + 1) / 2 = 0.75; ((-1 + -1) / 2 + 1) / 2 = 0; ((1 + 1) / 2 + 1) / 2 = 1
    assert task_similarity(1.0, 0.0) == pytest.approx(0.75)
    assert task_similarity(-1.0, -1.0) == 0.0
    assert task_similarity(1.0, 1.0) == 1.0
    assert task_similarity(1.0 + 1e-9, 1.0) == 1.0  # rounding above 1 is clipped
    with pytest.raises(InvalidInputError, match="semantic_cosine"):
        task_similarity(float("nan"), 0.0)
    with pytest.raises(InvalidInputError, match="feature_cosine"):
        task_similarity(0.0, 1.5)


def test_task_similarities_pool_classes_and_samples() -> None:
    # Task 1: prototypes (1,0), (0,1); visual features (1,0) x3.
    # Task 2: prototype (1,1);          visual features (0,1).
    # Task 3: prototype (-1,-1);        visual features (0,1).
    protos = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 1.0]]), np.array([[-1.0, -1.0]])]
    feats = [np.array([[1.0, 0.0]] * 3), np.array([[0.0, 1.0]]), np.array([[0.0, 1.0]])]
    # w_1 = 0.
    # w_2: s_sem = cos((1,1), mean of (1,0),(0,1) = (.5,.5)) = 1; s_feat = cos((0,1), (1,0)) = 0
    #      w_2 = ((1 + 0) / 2 + 1) / 2 = 0.75
    # w_3: s_sem = cos((-1,-1), mean of 3 earlier classes = (2/3, 2/3)) = -1
    #      s_feat = cos((0,1), mean of the 4 earlier SAMPLES = (3/4, 1/4)) = 0.25 / sqrt(0.625) = 1/sqrt(10)
    #      (the mean of the two task means, (.5,.5), would give 1/sqrt(2) instead)
    #      w_3 = ((-1 + 1/sqrt(10)) / 2 + 1) / 2 = (1 + 1/sqrt(10)) / 4 = 0.3290569...
    w = task_similarities(protos, feats)
    assert w[0] == 0.0
    assert w[1] == pytest.approx(0.75)
    assert w[2] == pytest.approx((1 + 1 / math.sqrt(10)) / 4)
    assert task_similarities([], []) == []


def test_task_similarities_validation() -> None:
    good = [np.ones((2, 3)), np.ones((1, 3))]
    with pytest.raises(InvalidInputError, match="visual_features_per_task"):
        task_similarities(good, good[:1])
    with pytest.raises(InvalidInputError, match=r"class_prototypes_per_task\[1\]"):
        task_similarities([np.ones((2, 3)), np.ones((1, 4))], good)  # width changes
    with pytest.raises(InvalidInputError, match=r"visual_features_per_task\[1\].*zero"):
        task_similarities(good, [np.ones((2, 3)), np.zeros((1, 3))])
    with pytest.raises(InvalidInputError, match=r"visual_features_per_task\[0\].*NaN"):
        task_similarities(good, [np.full((2, 3), np.nan), np.ones((1, 3))])


# ---------------------------------------------------------------------------------------------------
# M1 and M2


def test_m1_weighs_forgetting_by_dissimilarity() -> None:
    # Acc_avg = 65, w = [0, 0.6, 0.8], F = [0, -15, 30]  (T = 3)
    # sum (1 - w_t)(100 - F_t) = 1 * 100 + 0.4 * 115 + 0.2 * 70 = 100 + 46 + 14 = 160
    # M1 = 65 / 2 + 160 / (2 * 3) = 32.5 + 26.666... = 59.1666...
    assert m1(65.0, [0.0, 0.6, 0.8], [0.0, -15.0, 30.0]) == pytest.approx(32.5 + 160 / 6)
    # T = 1: w_1 = 0, F_1 = 0 -> M1 = A_1 / 2 + 50
    assert m1(40.0, [0.0], [0.0]) == pytest.approx(70.0)


def test_m1_validation() -> None:
    with pytest.raises(InvalidInputError, match="similarities"):
        m1(65.0, [0.0, 0.6], [0.0])
    with pytest.raises(InvalidInputError, match=r"similarities\[1\]"):
        m1(65.0, [0.0, 1.2], [0.0, 0.0])
    with pytest.raises(InvalidInputError, match="acc_avg"):
        m1(float("nan"), [0.0], [0.0])


def test_m2_combines_accuracy_transfer_and_nmi() -> None:
    # Acc_avg = 65, BWT steps = [0, 15, -22.5], FWT steps = [0, 8, 21], NMI_fv = 0.6, NMI_fa = 0.4
    # 1/4 * 0.65                                  = 0.1625
    # 1/(4*3) * ((0 + 15 - 22.5) + (0 + 8 + 21))/100 = (1/12) * 0.215 = 0.0179166...
    # 1/4 * (0.6 + 0.4)                           = 0.25
    # M2 = 0.4304166...
    value = m2(65.0, [0.0, 15.0, -22.5], [0.0, 8.0, 21.0], 0.6, 0.4)
    assert value == pytest.approx(0.1625 + 0.215 / 12 + 0.25)


def test_m2_is_not_clipped() -> None:
    # Acc_avg = 100, BWT = [0, 100, 90], FWT = [0, 100, 90], NMI_fv = NMI_fa = 1 (T = 3):
    # 1/4 * 1 + 1/12 * (0 + 1 + 0.9 + 0 + 1 + 0.9) + 1/4 * 2 = 0.25 + 3.8/12 + 0.5 = 1.0666...
    value = m2(100.0, [0.0, 100.0, 90.0], [0.0, 100.0, 90.0], 1.0, 1.0)
    assert value == pytest.approx(0.25 + 3.8 / 12 + 0.5)
    assert value > 1.0


def test_m2_validation() -> None:
    with pytest.raises(InvalidInputError, match="fwt_steps"):
        m2(65.0, [0.0, 1.0], [0.0], 0.5, 0.5)
    with pytest.raises(InvalidInputError, match="nmi_fa"):
        m2(65.0, [0.0], [0.0], 0.5, 1.5)


# ---------------------------------------------------------------------------------------------------
# Clustering NMI


def _blobs(rng: np.random.Generator, labels: np.ndarray, dim: int, spread: float) -> np.ndarray:
    centres = rng.normal(size=(labels.max() + 1, dim)) * 10.0  # (k, D), far apart
    return centres[labels] + rng.normal(size=(len(labels), dim)) * spread  # (N, D)


def test_nmi_is_one_for_the_same_clustering_in_different_spaces() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)  # 4 classes, 30 samples each
    fused = _blobs(rng, labels, dim=8, spread=0.1)  # (120, 8)
    visual = _blobs(rng, labels, dim=5, spread=0.1)  # (120, 5): other space, same grouping
    assert clustering_nmi(fused, visual, k=4) == pytest.approx(1.0)
    assert clustering_nmi(fused, fused, k=4, seed=3) == pytest.approx(1.0)


def test_nmi_is_near_zero_for_independent_clusterings() -> None:
    rng = np.random.default_rng(1)
    fused = _blobs(rng, rng.integers(0, 3, size=600), dim=6, spread=0.1)
    audio = _blobs(rng, rng.integers(0, 3, size=600), dim=6, spread=0.1)  # grouping independent of fused
    value = clustering_nmi(fused, audio, k=3)
    assert 0.0 <= value < 0.02


def test_nmi_is_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 4))
    y = rng.normal(size=(80, 4))
    assert clustering_nmi(x, y, k=5, seed=7) == clustering_nmi(x, y, k=5, seed=7)


def test_nmi_validation() -> None:
    x = np.zeros((10, 3))
    with pytest.raises(InvalidInputError, match="other"):
        clustering_nmi(np.ones((10, 3)), np.ones((9, 3)), k=2)
    with pytest.raises(InvalidInputError, match="k"):
        clustering_nmi(x, x, k=11)
    with pytest.raises(InvalidInputError, match="fused"):
        clustering_nmi(np.ones(10), x, k=2)


# ---------------------------------------------------------------------------------------------------
# ContinualRecord


def _record() -> ContinualRecord:
    """Three tasks; av uses the ROWS matrix, visual a flat one, no audio path."""
    record = ContinualRecord(seed=5)
    record.add_task(["lecture", "applause"], 100, {"av": [60.0], "visual": [50.0]}, b={"av": 10.0})
    record.add_task(
        ["hand raised"], 100, {"av": [75.0, 80.0], "visual": [50.0, 40.0]},
        z={"av": 20.0, "visual": 15.0}, b={"av": 12.0, "visual": 10.0}, similarity=0.6,
    )
    record.add_task(
        ["quiet work"], 100, {"av": [45.0, 50.0, 85.0], "visual": [40.0, 40.0, 40.0]},
        z={"av": 30.0}, b={"av": 9.0, "visual": 5.0}, similarity=0.8,
    )
    record.nmi_fv, record.nmi_fa = 0.6, 0.4
    return record


def test_record_figures_match_the_hand_computed_values() -> None:
    figures = _record().figures("av")
    # Equal held-out counts, so A_t is the plain row mean:
    # A_1 = 60, A_2 = (75 + 80) / 2 = 77.5, A_3 = (45 + 50 + 85) / 3 = 60
    assert figures.incremental_accuracy == pytest.approx((60.0, 77.5, 60.0))
    assert figures.average_accuracy == pytest.approx(197.5 / 3)
    assert figures.last_accuracy == 60.0
    assert figures.forgetting_steps == pytest.approx((0.0, -15.0, 30.0))
    assert figures.forgetting == pytest.approx(30.0)
    assert figures.bwt_steps == pytest.approx((0.0, 15.0, -22.5))
    assert figures.bwt == pytest.approx(-22.5)
    assert figures.fwt_steps == pytest.approx((0.0, 8.0, 21.0))
    assert figures.fwt == pytest.approx(14.5)
    # M1 = (197.5/3) / 2 + (1*100 + 0.4*115 + 0.2*70) / 6 = 32.9166... + 26.6666... = 59.5833...
    assert figures.m1 == pytest.approx(197.5 / 6 + 160 / 6)
    # M2 = (197.5/3)/400 + ((0 + 15 - 22.5) + (0 + 8 + 21)) / 1200 + (0.6 + 0.4) / 4
    assert figures.m2 == pytest.approx(197.5 / 1200 + 21.5 / 1200 + 0.25)
    assert figures.tasks == 3


def test_record_leaves_unmeasured_figures_out() -> None:
    record = _record()
    visual = record.figures("visual")
    # visual z for task 3 was not measured -> no FWT and hence no M2; M1 is still there.
    assert visual.fwt is None and visual.fwt_steps is None and visual.m2 is None
    assert visual.m1 is not None
    assert visual.forgetting == pytest.approx(5.0)  # j=1: max(50,50)-40=10; j=2: 40-40=0 -> 5
    record.similarities[2] = None
    record.nmi_fa = None
    av = record.figures("av")
    assert av.m1 is None and av.m2 is None and av.fwt == pytest.approx(14.5)


def test_record_summary_has_only_paths_with_data() -> None:
    summary = _record().summary()
    assert sorted(summary) == ["av", "visual"]
    assert summary["av"]["forgetting"] == pytest.approx(30.0)
    assert summary["av"]["bwt_steps"] == pytest.approx([0.0, 15.0, -22.5])
    json.dumps(summary)  # JSON-ready
    assert ContinualRecord().summary() == {}
    with pytest.raises(StateError):
        ContinualRecord().figures("av")
    with pytest.raises(InvalidInputError, match="path"):
        _record().figures("audio")


def test_record_round_trips_through_json() -> None:
    record = _record()
    text = json.dumps(record.to_dict())
    again = ContinualRecord.from_dict(json.loads(text))
    assert again == record
    assert again.summary() == record.summary()
    assert again.to_dict() == record.to_dict()


def test_record_pooled_accuracy_is_sample_weighted() -> None:
    record = ContinualRecord()
    record.add_task(["a"], 100, {"audio": [75.0]})
    record.add_task(["b"], 300, {"audio": [75.0, 80.0]}, similarity=0.5)
    # (100 * 75 + 300 * 80) / 400 = 78.75
    assert record.pooled["audio"] == pytest.approx([75.0, 78.75])
    assert record.figures("audio").fwt is None  # z/b never measured


def test_add_task_is_all_or_nothing() -> None:
    record = _record()
    before = record.to_dict()
    with pytest.raises(InvalidInputError, match=r"accuracies\[av\]"):
        record.add_task(
            ["new"], 10, {"av": [1.0, 2.0, 3.0, float("nan")], "visual": [1.0] * 4}, similarity=0.1
        )
    with pytest.raises(InvalidInputError, match="accuracies"):
        record.add_task(["new"], 10, {"av": [1.0] * 4}, similarity=0.1)  # visual path missing
    with pytest.raises(InvalidInputError, match="class_order"):
        record.add_task(["lecture"], 10, {"av": [1.0] * 4, "visual": [1.0] * 4}, similarity=0.1)
    with pytest.raises(InvalidInputError, match="held_out_count"):
        record.add_task(["new"], 0, {"av": [1.0] * 4, "visual": [1.0] * 4}, similarity=0.1)
    with pytest.raises(InvalidInputError, match="z"):
        record.add_task(["new"], 10, {"av": [1.0] * 4, "visual": [1.0] * 4}, z={"audio": 3.0})
    assert record.to_dict() == before


def test_record_rejects_inconsistent_fields() -> None:
    data = _record().to_dict()
    data["paths"]["av"]["pooled"][1] = 77.0  # the matrix row says 77.5
    with pytest.raises(InvalidInputError, match=r"pooled\[av\]\[1\]"):
        ContinualRecord.from_dict(data)
    data = _record().to_dict()
    data["paths"]["av"]["accuracy_matrix"][2][1] = float("nan")
    with pytest.raises(InvalidInputError, match=r"record.paths.av.rows\[2\]\[1\]: is NaN"):
        ContinualRecord.from_dict(data)
    data = _record().to_dict()
    data["similarities"][0] = 0.3
    with pytest.raises(InvalidInputError, match=r"similarities\[0\]"):
        ContinualRecord.from_dict(data)
    data = _record().to_dict()
    del data["held_out_counts"]
    with pytest.raises(InvalidInputError, match="record.held_out_counts"):
        ContinualRecord.from_dict(data)
    data = _record().to_dict()
    data["paths"]["speech"] = data["paths"]["av"]
    with pytest.raises(InvalidInputError, match="unknown path"):
        ContinualRecord.from_dict(data)
    data = _record().to_dict()
    data["held_out_counts"].append(5)
    with pytest.raises(InvalidInputError, match="held_out_counts"):
        ContinualRecord.from_dict(data)


def test_figures_to_dict_is_plain_json() -> None:
    figures = _record().figures("av")
    assert isinstance(figures, Figures)
    as_dict = figures.to_dict()
    assert isinstance(as_dict["incremental_accuracy"], list)
    assert json.loads(json.dumps(as_dict)) == as_dict
