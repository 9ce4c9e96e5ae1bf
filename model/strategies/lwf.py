"""`lwf`: Learning without Forgetting (Li and Hoiem, 2016) on the shared experts.

Before each task after the first, the current learner is copied as a frozen teacher; training adds
``distillation_weight * KD(student, teacher)`` over the old classes' logits (temperature 2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from model.losses import distillation
from model.strategies.base import SharedExpertMixin, Strategy

if TYPE_CHECKING:
    from model.batch import EncodedBatch, ForwardOutput, TaskData
    from model.strategies.base import LearnerView


class LwF(SharedExpertMixin, Strategy):
    name = "lwf"

    def __init__(self) -> None:
        self.teacher: "LearnerView | None" = None

    def before_task(self, learner: "LearnerView", task_key: str) -> None:
        super().before_task(learner, task_key)
        self.teacher = learner.clone() if learner.classes else None

    def loss(self, learner: "LearnerView", batch: "EncodedBatch", out: "ForwardOutput") -> torch.Tensor:
        ce = F.cross_entropy(out.logits, batch.labels)
        if self.teacher is None:
            return ce
        n_old = len(self.teacher.classes)
        with torch.no_grad():
            teacher_logits = self.teacher.forward(batch, self.teacher.prototypes).logits  # (B, n_old)
        return ce + learner.config.distillation_weight * distillation(out.logits[:, :n_old], teacher_logits)

    def after_task(self, learner: "LearnerView", task_key: str, data: "TaskData") -> None:
        self.teacher = None
