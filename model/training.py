"""How a task trains: the one training loop, its budget, the progress it reports, modality dropout.

    train(data, config, params, seed, step_loss, report, should_stop) -> (steps, last loss)

The loop is fixed for every strategy: epochs of shuffled batches, each batch's loss from
``step_loss`` (which the learner builds from the strategy's loss, the prototypes and feature replay),
AdamW under a cosine-annealed learning rate, gradients clipped. It reports ``TrainingProgress`` after
every step and raises ``TrainingCancelled`` between steps when ``should_stop()`` says so.
``TrainingConfig`` (the budget) is one part of ``model.learner_config.LearnerConfig``.

Random draws come from CPU generators seeded per task (``seed``): the same batches, in the same
order, whatever device the learner runs on.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

import torch

from model.batch import EncodedBatch
from model.errors import ModelError


@dataclass(frozen=True)
class TrainingConfig:
    """How long and how each task trains.

    A task trains for ``epochs`` passes over its examples, or for more when that would give fewer
    than ``min_steps`` optimizer steps: a small task (a single class of a few hundred pairs, a
    handful of uploaded examples) gets as many steps as a typical one instead of a few dozen
    (``epochs_for``). Whole epochs always, so every example is seen equally often; ``min_steps=0``
    trains for exactly ``epochs``. The default, 70, is what 5 epochs give a task of about 450
    pairs, so tasks of that size and larger train exactly as before it existed.
    """

    epochs: int = 5
    min_steps: int = 70
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    prompts_per_step: int = 8
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "prompts_per_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.min_steps < 0:
            raise ValueError(f"min_steps: must be >= 0, got {self.min_steps}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate: must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: must be >= 0, got {self.weight_decay}")

    def steps_per_epoch(self, examples: int) -> int:
        return math.ceil(examples / self.batch_size)

    def epochs_for(self, examples: int) -> int:
        """Epochs a task of ``examples`` training pairs gets: ``epochs``, or the fewest whole epochs
        that reach ``min_steps``."""
        per_epoch = self.steps_per_epoch(examples)
        return max(self.epochs, math.ceil(self.min_steps / per_epoch)) if per_epoch else self.epochs


@dataclass(frozen=True)
class TrainingProgress:
    phase: str  # "preparing" | "training" | "evaluating"
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float | None


@dataclass(frozen=True)
class TaskReport:
    task_key: str
    classes: tuple[str, ...]
    examples: int
    steps: int
    final_loss: float | None
    seconds: float
    trainable_parameters: int  # parameters this task trained (its experts, fusion, ...)


class TrainingCancelled(ModelError):
    """``should_stop()`` asked the learner to stop; its state is as before the task."""


StepLoss = Callable[[EncodedBatch, torch.Generator, random.Random], torch.Tensor]
"""A batch's loss: ``(batch, generator, rng) -> scalar``, drawing any randomness it needs from the two."""


def train(data: EncodedBatch, config: TrainingConfig, params: list[torch.nn.Parameter], seed: int,
          step_loss: StepLoss, report: Callable[[TrainingProgress], None],
          should_stop: Callable[[], bool] | None) -> tuple[int, float | None]:
    """Trains ``params`` on ``data`` for ``config.epochs_for(len(data))`` epochs; returns the number of
    optimizer steps and the last step's loss."""
    rng = random.Random(seed)
    epochs = config.epochs_for(len(data))
    total = config.steps_per_epoch(len(data)) * epochs
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    generator = torch.Generator().manual_seed(seed)
    step, loss_value = 0, None
    for epoch in range(epochs):
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), config.batch_size):
            if should_stop is not None and should_stop():
                raise TrainingCancelled("training cancelled")
            loss = step_loss(data.select(order[start:start + config.batch_size]), generator, rng)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            schedule.step()
            step += 1
            loss_value = float(loss.detach())
            report(TrainingProgress("training", epoch + 1, epochs, step, total, loss_value))
    return step, loss_value


def drop_modalities(batch: EncodedBatch, p: float, generator: torch.Generator) -> EncodedBatch:
    """Modality dropout: a sample with both inputs loses one of them with probability ``p`` (image or
    audio, evenly), so every single-modality path is trained too."""
    has_image, has_audio = dropped_masks(batch.has_image, batch.has_audio, p, generator)
    return EncodedBatch(batch.images, batch.audio, has_image, has_audio, batch.labels)


def dropped_masks(has_image: torch.Tensor, has_audio: torch.Tensor, p: float,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The masks of :func:`drop_modalities` (drawn on the CPU, applied on the masks' device)."""
    if p == 0:
        return has_image, has_audio
    u = torch.rand(len(has_image), generator=generator).to(has_image.device)
    both = has_image & has_audio
    drop_image = both & (u < p / 2)
    drop_audio = both & (u >= p / 2) & (u < p)
    return has_image & ~drop_image, has_audio & ~drop_audio
