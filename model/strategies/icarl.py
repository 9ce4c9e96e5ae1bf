"""`icarl`: iCaRL (Rebuffi et al., 2017) on the shared experts: exemplar replay + nearest mean.

- Memory: after each task, ``exemplars_per_class`` training samples per new class are chosen by
  herding on fused features (the ones whose running mean best tracks the class mean). They are kept
  as model-ready tensors and saved with the model version, so this strategy STORES TRAINING DATA.
- Training: new data plus all exemplars, cross-entropy plus distillation to the previous model (LwF).
- Classification: nearest mean of exemplars, by cosine similarity of fused features to each class's
  mean exemplar feature (recomputed with the current model after every task).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from model.strategies.exemplars import ExemplarMemory
from model.strategies.lwf import LwF

if TYPE_CHECKING:
    from model.batch import EncodedBatch, TaskData
    from model.strategies.base import LearnerView


class ICaRL(LwF):
    name = "icarl"
    keeps_exemplars = True

    def __init__(self) -> None:
        super().__init__()
        self.exemplars = ExemplarMemory()
        self.class_means = torch.zeros(0)

    @property
    def memory(self) -> "EncodedBatch | None":
        """The kept pairs (model-ready tensors), None before the first task."""
        return self.exemplars.batch

    def training_data(self, learner: "LearnerView", data: "TaskData") -> "TaskData":
        return self.exemplars.with_task(data)

    def stored_examples(self) -> int:
        return len(self.exemplars)

    def after_task(self, learner: "LearnerView", task_key: str, data: "TaskData") -> None:
        super().after_task(learner, task_key, data)
        self.exemplars.keep(data, learner.fused_features(data).fused, learner.config.exemplars_per_class)
        self._update_means(learner)

    def _update_means(self, learner: "LearnerView") -> None:
        assert self.memory is not None
        fused = F.normalize(learner.fused_features(self.memory).fused, dim=-1)
        n = len(learner.classes)
        means = torch.zeros(n, fused.shape[1], device=fused.device)
        means.index_add_(0, self.memory.labels, fused)
        self.class_means = F.normalize(means, dim=-1)  # (C, E)

    def scores(self, learner: "LearnerView", fused: torch.Tensor, extra_prototypes: torch.Tensor | None) -> torch.Tensor:
        means = self.class_means if self.class_means.numel() else learner.prototypes
        if extra_prototypes is not None:  # classes with no exemplars yet: their text prototypes
            means = torch.cat([means, extra_prototypes])
        return learner.logit_scale * F.normalize(fused, dim=-1) @ means.T

    def to(self, device: torch.device) -> None:
        self.exemplars.to(device)
        self.class_means = self.class_means.to(device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = self.exemplars.state_dict()
        if state:
            state["class_means"] = self.class_means
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "class_means" not in state:
            raise ValueError("icarl exemplars: missing ['class_means']")
        self.exemplars.load_state_dict(state, "icarl", required=True)
        self.class_means = state["class_means"]
