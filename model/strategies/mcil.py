"""`mcil`, the product's default: an exact head over the frozen encoders, every path weighed by its evidence.

    every task one forward pass over its examples through the frozen encoders, then the analytic head
               (model/heads.py: ridge regression on the features, solved from class statistics)
               adds their statistics and solves again; nothing trains
    a pair     the weighted mean of the image, sound and joint heads' scores, each weighed by the
               share of the targets it explains out of sample (GCV), so a modality with no signal
               gets no vote

Why frozen: on real sounds and photos (ESC-50 + CIFAR-10), features adapted on a first task of two
classes served the later classes worse than the frozen encoders did, and a first task that trains
took minutes and 5 GB on a 2-core machine (docs/benchmarks.md, "Choosing the default"). Because no
feature moves, the head is exact from the first task on: after T tasks it equals the head fitted once
on every example seen, and the statistics of two learners over the same encoders add up.

The MCIL paper's parts (MIFE experts, the lite projections, AAVFM, ``a*L_CW + (1-a)*L_MI``) are still
here, as APER's recipe ("adapt once", Zhou et al. 2023): a learner whose head reads adapted features
(``HeadConfig(features="adapted")`` or ``"both"``) trains them on its first task and freezes them
after it, which is what this strategy did by default before.
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
    head_features = "frozen"

    @staticmethod
    def adapts(learner: "LearnerView") -> bool:
        """Whether the first task trains the paper's parts: only when the head reads what they compute."""
        return learner.config.head.features in ("adapted", "both")

    def trains_on(self, learner: "LearnerView") -> bool:
        return not learner.tasks and self.adapts(learner)

    def before_task(self, learner: "LearnerView", task_key: str) -> None:
        if not learner.tasks and self.adapts(learner):
            super().before_task(learner, task_key)

    def after_task(self, learner: "LearnerView", task_key: str, data: "TaskData") -> None:
        if task_key in learner.backbone.image.expert_tasks:
            super().after_task(learner, task_key, data)

    def restore_task_structure(self, learner: "LearnerView", task_key: str) -> None:
        if not learner.backbone.image.expert_tasks and self.adapts(learner):  # only the first task has experts
            super().restore_task_structure(learner, task_key)
