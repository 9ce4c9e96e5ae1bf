"""The evaluation protocol fills the record the figures come from."""

from __future__ import annotations

from dataclasses import replace

from model.fusion import FusionConfig
from model.protocol import ContinualEvaluation
from tests.conftest import FAST


def test_two_tasks_fill_matrices_for_every_path(make_learner, two_tasks) -> None:
    learner = make_learner("mcil", config=replace(FAST, training=replace(FAST.training, epochs=3)))
    evaluation = ContinualEvaluation(baseline=learner.clone(), seed=0)
    held_out = []
    for names, train, test in ((["red", "green"], "train1", "test1"), (["blue", "yellow"], "train2", "test2")):
        held_out.append(two_tasks[test])
        evaluation.before_task(learner, names, two_tasks[test])
        learner.learn_task(two_tasks[train], names)
        evaluation.after_task(learner, held_out, two_tasks[train])
    record = evaluation.record
    assert record.class_order == [["red", "green"], ["blue", "yellow"]]
    assert set(record.matrices) == {"av", "visual", "audio"}
    assert [len(r) for r in record.matrices["av"].rows] == [1, 2]
    assert record.z["av"][1] is not None and record.b["av"][1] is not None
    assert 0.0 <= record.similarities[1] <= 1.0 and record.nmi_fv is not None
    figures = record.summary()["av"]
    assert figures["m1"] is not None and figures["m2"] is not None
    assert evaluation.fused_share == [1.0, 1.0]  # default th = -1: AAVFM fuses every pair
    again = ContinualEvaluation.from_dict(evaluation.to_dict())
    assert again.record.summary() == record.summary()
    assert again.fused_share == evaluation.fused_share


def test_fused_share_counts_pairs_that_took_the_fusion_branch(make_learner, two_tasks) -> None:
    # th = 1: a pair fuses only if its image and audio features correlate perfectly, never here.
    config = replace(FAST, fusion=FusionConfig(threshold=1.0), training=replace(FAST.training, epochs=1))
    learner = make_learner("mcil-paper", config=config)
    evaluation = ContinualEvaluation()
    evaluation.before_task(learner, ["red", "green"], two_tasks["test1"])
    learner.learn_task(two_tasks["train1"], ["red", "green"])
    evaluation.after_task(learner, [two_tasks["test1"]], two_tasks["train1"])
    assert evaluation.fused_share == [0.0]
