"""The evaluation protocol fills the record the figures come from."""

from __future__ import annotations

from dataclasses import replace

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
    again = ContinualEvaluation.from_dict(evaluation.to_dict())
    assert again.record.summary() == record.summary()
