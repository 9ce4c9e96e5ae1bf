"""`mcil`, the product's default: the paper's components adapt once, then an exact head learns every task.

    task 1     MIFE experts, the lite projections and AAVFM train with a*L_CW + (1-a)*L_MI, then freeze
    every task one forward pass over its examples, then the analytic head (model/heads.py) adds their
               class statistics and solves again; nothing else changes

This is APER's recipe ("adapt once", Zhou et al. 2023) with the MCIL paper's parts as the adapter.
Because no feature moves after the first task, the analytic head is exact: after T tasks it equals
the head fitted once on every example seen, and a learned class is never overwritten by a new one.
What the head reads (``head_features``) was chosen on a validation split of train.csv
(docs/benchmarks.md, "Choosing the default").

A first task of a single class gives the cross-entropy nothing to separate: only the MI term trains
then, and the features stay close to the frozen encoders' (measured at T = 10 in the docs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from model.strategies.mcil_paper import MCILPaper

if TYPE_CHECKING:
    from model.batch import TaskData
    from model.strategies.base import LearnerView


class MCIL(MCILPaper):
    name = "mcil"
    replays_features = False  # nothing trains after the first task, so there is nothing to replay against
    head_kind = "analytic"
    head_features = "adapted"

    def trains_on(self, learner: "LearnerView") -> bool:
        return not learner.tasks

    def before_task(self, learner: "LearnerView", task_key: str) -> None:
        if not learner.tasks:
            super().before_task(learner, task_key)

    def after_task(self, learner: "LearnerView", task_key: str, data: "TaskData") -> None:
        if task_key in learner.backbone.image.expert_tasks:
            super().after_task(learner, task_key, data)

    def restore_task_structure(self, learner: "LearnerView", task_key: str) -> None:
        if not learner.backbone.image.expert_tasks:  # only the first task has experts
            super().restore_task_structure(learner, task_key)
