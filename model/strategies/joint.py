"""`joint`: the upper bound. Keeps every task's training data and trains on all of it each task.

For benchmarks only: it stores all training inputs in memory (never use it on sensitive data).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from model.batch import EncodedBatch
from model.strategies.base import SharedExpertMixin, Strategy

if TYPE_CHECKING:
    from model.batch import TaskData
    from model.strategies.base import LearnerView


class Joint(SharedExpertMixin, Strategy):
    name = "joint"
    keeps_training_data = True

    def __init__(self) -> None:
        self.seen: "TaskData | None" = None

    def training_data(self, learner: "LearnerView", data: "TaskData") -> "TaskData":
        return data if self.seen is None else EncodedBatch.concat([self.seen, data])

    def stored_examples(self) -> int:
        return 0 if self.seen is None else len(self.seen)

    def after_task(self, learner: "LearnerView", task_key: str, data: "TaskData") -> None:
        self.seen = self.training_data(learner, data)

    def to(self, device: torch.device) -> None:
        if self.seen is not None:
            self.seen = self.seen.to(device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}  # the training data is not part of a saved model version
