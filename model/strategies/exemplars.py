"""Exemplar memory: training pairs kept per class and trained on again (``icarl``; ``cign``'s buffer).

After each task, ``per_class`` pairs of every class the task brought are chosen by herding on a
feature of the caller's choice (the pairs whose running mean best tracks the class mean) and kept as
model-ready tensors. A strategy that keeps them STORES TRAINING DATA in every saved version.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from model.batch import EncodedBatch

FIELDS = ("images", "audio", "has_image", "has_audio", "labels")


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


class ExemplarMemory:
    """The kept pairs (``batch``, None until the first task) and what a strategy does with them."""

    def __init__(self) -> None:
        self.batch: EncodedBatch | None = None

    def __len__(self) -> int:
        return 0 if self.batch is None else len(self.batch)

    def with_task(self, data: EncodedBatch) -> EncodedBatch:
        """The task's data and every kept pair, for training."""
        return data if self.batch is None else EncodedBatch.concat([self.batch, data])

    def keep(self, data: EncodedBatch, features: torch.Tensor, per_class: int) -> None:
        """Adds ``per_class`` pairs of each class in ``data``, by herding on ``features`` (one row each)."""
        picked = []
        for label in torch.unique(data.labels).tolist():
            rows = (data.labels == label).nonzero().flatten()
            picked.append(rows[herding(features[rows], per_class)])
        new = data.select(torch.cat(picked))
        self.batch = new if self.batch is None else EncodedBatch.concat([self.batch, new])

    def to(self, device: torch.device) -> None:
        if self.batch is not None:
            self.batch = self.batch.to(device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.batch is None else {f"memory.{f}": getattr(self.batch, f) for f in FIELDS}

    def load_state_dict(self, state: dict[str, torch.Tensor], owner: str, required: bool) -> None:
        """Restores the pairs from ``state``; a ValueError naming ``owner`` when some are missing (or
        all, when ``required``)."""
        present = [f for f in FIELDS if f"memory.{f}" in state]
        if (present or required) and len(present) != len(FIELDS):
            raise ValueError(f"{owner} exemplars: missing {[f'memory.{f}' for f in FIELDS if f not in present]}")
        self.batch = EncodedBatch(*(state[f"memory.{f}"] for f in FIELDS)) if present else None
