"""How a task trains: the one training loop, its budget, the progress it reports, modality dropout.

    train_task(learner, data, new_classes, report, should_stop) -> (steps, last loss)

The loop is fixed for every strategy (``model/strategies``): epochs of shuffled batches, each batch's
loss the strategy's (``train_task``'s ``step_loss``), AdamW under a cosine-annealed learning rate,
gradients clipped (``train``). It reports ``TrainingProgress`` after every step and raises
``TrainingCancelled`` between steps when ``should_stop()`` says so. ``TrainingConfig`` (the budget) is
one part of ``model.learner_config.LearnerConfig``.

Each step, modality dropout (``modality_dropout``) hides one input of some pairs, so an image alone or a
sound alone is trained to classify too, not only the fused pair. Text prototypes are recomputed with
gradients from a random subset of the prompt templates (all 35 at inference), so the text experts
train too. Strategies that freeze old prototypes score new examples against the stored old ones; those
that replay also score pseudo-features of old classes drawn from their feature statistics
(``model/replay.py``), the two cross-entropies weighted by how many classes each stands for
(``replay_weighting``), so a task of one new class does not outweigh nine old ones.

Only the learned parts switch to training mode; frozen parts (and their batch-norm statistics) stay in
eval. Random draws come from CPU generators seeded per task: the same batches, in the same order,
whatever device the learner runs on.

The learner is seen through ``Trainee`` (a Protocol), so this module never imports the learner.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import torch
from torch.nn import functional as F

from model.batch import EncodedBatch, ForwardOutput
from model.errors import ModelError

if TYPE_CHECKING:
    from model.backbone import TriModalBackbone
    from model.replay import ClassStatistics


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


class TrainingSettings(Protocol):
    """What training reads of the learner's configuration (``model.learner_config.LearnerConfig``)."""

    @property
    def training(self) -> TrainingConfig: ...

    @property
    def modality_dropout(self) -> float: ...

    @property
    def replayed_features(self) -> int: ...

    @property
    def replay_weighting(self) -> str: ...


class TaskLoss(Protocol):
    """What training uses of the strategy (``model.strategies.base.Strategy``)."""

    @property
    def freezes_old_prototypes(self) -> bool: ...

    def loss(self, learner: Any, batch: EncodedBatch, out: ForwardOutput) -> torch.Tensor:
        """``learner``: the learner being trained, which strategies see as a ``LearnerView``."""
        ...


class Trainee(Protocol):
    """What training a task uses of the learner (``model.learner.Learner`` is one)."""

    @property
    def backbone(self) -> "TriModalBackbone": ...

    @property
    def config(self) -> TrainingSettings: ...

    @property
    def strategy(self) -> TaskLoss: ...

    @property
    def fusion(self) -> torch.nn.Module: ...

    @property
    def prototypes(self) -> torch.Tensor: ...  # (C, E) stored prototypes of the learned classes

    @property
    def class_statistics(self) -> "ClassStatistics": ...

    @property
    def templates(self) -> tuple[str, ...]: ...

    @property
    def classes(self) -> list[str]: ...

    @property
    def tasks(self) -> list[list[str]]: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def logit_scale(self) -> float: ...

    def trainable_parameters(self) -> list[torch.nn.Parameter]: ...

    def text_prototypes(self, class_names: Sequence[str], templates: Sequence[str] | None = None) -> torch.Tensor: ...

    def forward(self, batch: EncodedBatch, prototypes: torch.Tensor,
                extra_prototypes: torch.Tensor | None = None, *, training: bool = False,
                scores: bool = True, prototype_scores: bool = False) -> ForwardOutput: ...


def train_task(learner: Trainee, data: EncodedBatch, new_classes: list[str],
               report: Callable[[TrainingProgress], None],
               should_stop: Callable[[], bool] | None) -> tuple[int, float | None]:
    """The task's training (:func:`train`): logits over every class so far. Old classes' prototypes
    are recomputed with gradients, or (strategies that freeze them) taken as stored, as fixed
    negatives. Returns the number of optimizer steps and the last step's loss."""
    cfg = learner.config.training
    freeze_old = learner.strategy.freezes_old_prototypes
    class_names = new_classes if freeze_old else learner.classes + new_classes
    # Classes the task's examples stand for (new and revisited): what replay weighs the task's loss by.
    n_task = len(set(data.labels.tolist()))
    seed = cfg.seed + 1000 * len(learner.tasks)
    torch.manual_seed(seed)  # router noise in the adapters
    params = learner.trainable_parameters()
    if not params:
        return 0, None

    def step_loss(batch: EncodedBatch, generator: torch.Generator, rng: random.Random) -> torch.Tensor:
        batch = drop_modalities(batch, learner.config.modality_dropout, generator)
        templates = rng.sample(learner.templates, min(cfg.prompts_per_step, len(learner.templates)))
        if freeze_old and not class_names:  # a task of known classes only: every prototype is stored
            prototypes = learner.prototypes
        else:
            prototypes = learner.text_prototypes(class_names, templates)  # (C, E), with gradients
            if freeze_old:
                prototypes = torch.cat([learner.prototypes, prototypes])  # old rows: stored, no gradient
        out = learner.forward(batch, prototypes, training=True)
        loss = learner.strategy.loss(learner, batch, out)
        replayed = replay_loss(learner, prototypes, generator)
        return loss if replayed is None else with_replay(learner, loss, replayed, n_task)

    set_training(learner, True)
    try:
        return train(data, cfg, params, seed, step_loss, report, should_stop)
    finally:
        set_training(learner, False)


def with_replay(learner: Trainee, loss: torch.Tensor, replayed: torch.Tensor, n_task: int) -> torch.Tensor:
    """The step's loss: the task's examples' and the replayed features' (see ``replay_weighting``),
    weighted by the ``n_task`` classes the task's examples stand for against the learned ones."""
    if learner.config.replay_weighting == "equal":
        return loss + replayed
    n_old = len(learner.classes)
    return (n_task * loss + n_old * replayed) / (n_task + n_old)


def replay_loss(learner: Trainee, prototypes: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
    """Cross-entropy of pseudo-features of old classes (model/replay.py) against every prototype,
    through the fusion module; ``None`` when nothing is replayed."""
    n = learner.config.replayed_features
    if n == 0 or len(learner.class_statistics) == 0:  # statistics exist only for strategies that replay
        return None
    v, a, has_v, has_a, labels = (t.to(learner.device) for t in learner.class_statistics.sample(n, generator))
    has_v, has_a = dropped_masks(has_v, has_a, learner.config.modality_dropout, generator)
    fusion = learner.fusion(v, a, has_v, has_a, prototypes, learner.logit_scale)
    logits = learner.logit_scale * F.normalize(fusion.fused, dim=-1) @ prototypes.T
    return F.cross_entropy(logits, labels)


def set_training(learner: Trainee, on: bool) -> None:
    """Only the learned parts switch mode: frozen parts (and their batch-norm statistics) stay in eval."""
    for module in (learner.backbone.image.adapters, learner.backbone.text.adapters, learner.fusion):
        module.train(on)


def seed_learning(seed: int) -> None:
    """Seeds every draw a task makes outside the loop's own generators (a new task's experts' initial
    weights, router noise), so that learning the same examples again gives the same version."""
    torch.manual_seed(seed)
