"""`moe-adapters`: MIFE experts per task (old ones frozen), concatenation fusion, cross-entropy.

The paper's MoE-CLIP row: the same incremental experts as `mcil` without AAVFM and the MCIL loss.

Training scores only the current task's classes (old classes' logits are masked), as prompt- and
adapter-based class-incremental methods do (L2P, MoE-Adapters): with old classes in the softmax and
no old data, every step would push the shared parts (router heads, fusion) to reject old classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from model.strategies.base import Strategy

if TYPE_CHECKING:
    from model.learner import EncodedBatch, ForwardOutput, Learner, TaskData


def current_task_logits(learner: "Learner", batch: "EncodedBatch", out: "ForwardOutput") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels restricted to the task being learned (its classes follow the old ones)."""
    n_old = len(learner.classes)
    return out.logits[:, n_old:], batch.labels - n_old


class MoEAdapters(Strategy):
    name = "moe-adapters"
    fusion_kind = "concat"

    def before_task(self, learner: "Learner", task_key: str) -> None:
        learner.backbone.add_task_experts(task_key, learner.config.experts_per_task)

    def loss(self, learner: "Learner", batch: "EncodedBatch", out: "ForwardOutput") -> torch.Tensor:
        logits, labels = current_task_logits(learner, batch, out)
        return F.cross_entropy(logits, labels)

    def after_task(self, learner: "Learner", task_key: str, data: "TaskData") -> None:
        learner.backbone.freeze_task_experts(task_key)

    def restore_task_structure(self, learner: "Learner", task_key: str) -> None:
        self.before_task(learner, task_key)
        learner.backbone.freeze_task_experts(task_key)
