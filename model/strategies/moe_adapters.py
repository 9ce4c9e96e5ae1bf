"""`moe-adapters`: MIFE experts per task (old ones frozen), concatenation fusion, cross-entropy.

The paper's MoE-CLIP row: the same incremental experts as `mcil` without AAVFM and the MCIL loss.

Each class keeps the text prototype computed when it was learned: later text experts cannot move
old classes' prototypes. Training scores the new task's examples against every class so far, the
old classes' frozen prototypes serving as fixed negatives, so new classes are learned apart from
the old ones (and a task of a single class still has something to learn against).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from model.strategies.base import Strategy

if TYPE_CHECKING:
    from model.batch import TaskData
    from model.fusion import FusionKind
    from model.strategies.base import LearnerView


class MoEAdapters(Strategy):
    name = "moe-adapters"
    fusion_kind: ClassVar[FusionKind] = "concat"
    freezes_old_prototypes = True
    replays_features = True

    def before_task(self, learner: "LearnerView", task_key: str) -> None:
        learner.backbone.add_task_experts(task_key, learner.config.experts_per_task)

    def after_task(self, learner: "LearnerView", task_key: str, data: "TaskData") -> None:
        learner.backbone.freeze_task_experts(task_key)

    def restore_task_structure(self, learner: "LearnerView", task_key: str) -> None:
        self.before_task(learner, task_key)
        learner.backbone.freeze_task_experts(task_key)
