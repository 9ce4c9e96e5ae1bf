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

from model.batch import EncodedBatch
from model.strategies.lwf import LwF

if TYPE_CHECKING:
    from model.batch import TaskData
    from model.strategies.base import LearnerView

_FIELDS = ("images", "audio", "has_image", "has_audio", "labels")


def herding(features: torch.Tensor, m: int) -> list[int]:
    """Indices of ``m`` rows of ``features (n, E)`` chosen greedily so their mean tracks the class mean."""
    f = F.normalize(features, dim=-1)
    mu = f.mean(dim=0)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    for k in range(1, min(m, len(f)) + 1):
        candidates = (mu - (running + f) / k).norm(dim=-1)  # (n,)
        if chosen:
            candidates[chosen] = float("inf")
        i = int(candidates.argmin())
        chosen.append(i)
        running += f[i]
    return chosen


class ICaRL(LwF):
    name = "icarl"
    keeps_exemplars = True

    def __init__(self) -> None:
        super().__init__()
        self.memory: "EncodedBatch | None" = None
        self.class_means = torch.zeros(0)

    def training_data(self, learner: "LearnerView", data: "TaskData") -> "TaskData":
        return data if self.memory is None else EncodedBatch.concat([self.memory, data])

    def stored_examples(self) -> int:
        return 0 if self.memory is None else len(self.memory)

    def after_task(self, learner: "LearnerView", task_key: str, data: "TaskData") -> None:
        super().after_task(learner, task_key, data)
        fused = learner.fused_features(data).fused
        picked = []
        for label in torch.unique(data.labels).tolist():
            rows = (data.labels == label).nonzero().flatten()
            picked.append(rows[herding(fused[rows], learner.config.exemplars_per_class)])
        new = data.select(torch.cat(picked))
        self.memory = new if self.memory is None else EncodedBatch.concat([self.memory, new])
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
        if self.memory is not None:
            self.memory = self.memory.to(device)
        self.class_means = self.class_means.to(device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.memory is None:
            return {}
        state = {f"memory.{f}": getattr(self.memory, f) for f in _FIELDS}
        state["class_means"] = self.class_means
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = [k for k in (*(f"memory.{f}" for f in _FIELDS), "class_means") if k not in state]
        if missing:
            raise ValueError(f"icarl exemplars: missing {missing}")
        self.memory = EncodedBatch(*(state[f"memory.{f}"] for f in _FIELDS))
        self.class_means = state["class_means"]
