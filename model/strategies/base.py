"""The strategy plugin interface: what a continual-learning method adds to the one training loop.

The loop (``Learner.learn_task``, ``model.training.train_task``) is fixed (encode, forward, loss, AdamW
step, cosine schedule). A strategy hooks into it, in the order the loop calls them:

    before_task(learner, task_key)          add experts, snapshot a teacher, ...
    training_data(learner, data) -> data    add replayed exemplars or earlier tasks' data
    stored_examples() -> int                how many examples training_data adds (for the budget)
    train(learner, data, new_classes, ...)  the shared loop (model/training.py) unless overridden
    loss(learner, batch, out) -> scalar     cross-entropy unless overridden
    after_task(learner, task_key, data)     freeze experts, select exemplars, ...
    scores(learner, fused, extra) -> logits how fused features become class scores at inference

A task may bring classes already learned (a domain-incremental task: the same classes from a new
speaker); ``new_classes`` is then shorter than the task's classes, or empty.

A strategy may own a network of its own (``network``, ``cign`` and ``mmcl``: token networks over the
frozen encoders' outputs, model/strategies/token_network.py). The learner then trains that network's
parameters and delegates its forward pass to ``forward``.

Strategies keep their own tensors (exemplars, a network) in ``state_dict()``/``load_state_dict()``;
the learner saves them with the model version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, ClassVar, Protocol, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from model.training import TrainingProgress, train_task

if TYPE_CHECKING:
    from model.backbone import TriModalBackbone
    from model.batch import EncodedBatch, ForwardOutput, TaskData
    from model.fusion import FusionKind
    from model.learner_config import LearnerConfig


class LearnerView(Protocol):
    """What a strategy may use of the learner it is plugged into (``model.learner.Learner`` is one).

    Strategies see the learner through this view, so they never import the learner: arrows point
    from the learner down to its strategies."""

    backbone: "TriModalBackbone"
    config: "LearnerConfig"
    prototypes: torch.Tensor  # (C, E) unit rows, one per learned class

    @property
    def classes(self) -> list[str]: ...

    @property
    def tasks(self) -> list[list[str]]: ...

    @property
    def logit_scale(self) -> float: ...

    def clone(self) -> "LearnerView": ...

    def text_prototypes(self, class_names: "Sequence[str]", templates: "Sequence[str] | None" = None) -> torch.Tensor: ...

    def fused_features(self, batch: "EncodedBatch") -> "ForwardOutput": ...

    def forward(self, batch: "EncodedBatch", prototypes: torch.Tensor,
                extra_prototypes: torch.Tensor | None = None, *, training: bool = False,
                scores: bool = True, prototype_scores: bool = False) -> "ForwardOutput": ...


class Strategy:
    name: ClassVar[str]
    fusion_kind: ClassVar[FusionKind] = "concat"
    trains: ClassVar[bool] = True
    keeps_exemplars: ClassVar[bool] = False
    keeps_training_data: ClassVar[bool] = False
    freezes_old_prototypes: ClassVar[bool] = False  # an old class keeps the prototype it was learned with
    replays_features: ClassVar[bool] = False  # draws old classes' pseudo-features while training (model/replay.py)
    head_kind: ClassVar[str] = "prototypes"  # the head it scores with unless configured (model/heads.py)
    head_features: ClassVar[str] = "adapted"  # what a statistics head reads unless configured
    head_expansion: ClassVar[int] = 0  # the analytic head's random expansion width M unless configured
    compiles: ClassVar[bool] = True  # a version with a statistics head can be served as graphs (export/)
    network: nn.Module | None = None  # a network of the strategy's own, which then computes the forward

    def keeps_examples(self, config: "LearnerConfig") -> bool:
        """Whether versions hold training examples (exemplars) under ``config``."""
        return self.keeps_exemplars

    def trains_on(self, learner: "LearnerView") -> bool:
        """Whether the coming task trains anything by gradient (asked before ``before_task``)."""
        return self.trains

    @classmethod
    def fusion_used(cls, requested: FusionKind) -> FusionKind:
        """The fusion kind this strategy runs when ``requested`` is configured: a strategy built on
        AAVFM takes the request (the no-aavfm ablation asks for "concat"); the others always concatenate."""
        return requested if cls.fusion_kind == "aavfm" else "concat"

    def before_task(self, learner: "LearnerView", task_key: str) -> None:
        """Called once the new task's inputs are validated and encoded, before the first step."""

    def restore_task_structure(self, learner: "LearnerView", task_key: str) -> None:
        """Rebuilds what ``before_task``/``after_task`` created (for loading a saved version)."""

    def training_data(self, learner: "LearnerView", data: "TaskData") -> "TaskData":
        return data

    def stored_examples(self) -> int:
        """How many stored examples ``training_data`` adds to a task's own (exemplars, earlier tasks)."""
        return 0

    def train(self, learner: "LearnerView", data: "TaskData", new_classes: list[str],
              report: Callable[[TrainingProgress], None],
              should_stop: Callable[[], bool] | None) -> tuple[int, float | None]:
        """Trains the task; returns the optimizer steps and the last loss. The shared loop by default."""
        return train_task(learner, data, new_classes, report, should_stop)  # type: ignore[arg-type]

    def forward(self, learner: "LearnerView", batch: "EncodedBatch", prototypes: torch.Tensor, *,
                training: bool, scores: bool) -> "ForwardOutput":
        """The whole forward pass, for strategies with a ``network``; ``prototypes`` covers the learned
        classes and then any extra (untrained) ones."""
        raise NotImplementedError(f"strategy {self.name} has no network of its own")

    def loss(self, learner: "LearnerView", batch: "EncodedBatch", out: "ForwardOutput") -> torch.Tensor:
        return F.cross_entropy(out.logits, batch.labels)

    def after_task(self, learner: "LearnerView", task_key: str, data: "TaskData") -> None:
        """Called after training, once the new classes and their prototypes are in place."""

    def scores(self, learner: "LearnerView", fused: torch.Tensor, extra_prototypes: torch.Tensor | None) -> torch.Tensor:
        """``(B, E)`` fused features -> ``(B, C)`` logits over the learned classes (+ extra classes)."""
        prototypes = learner.prototypes
        if extra_prototypes is not None:
            prototypes = torch.cat([prototypes, extra_prototypes])
        return learner.logit_scale * F.normalize(fused, dim=-1) @ prototypes.T

    def to(self, device: torch.device) -> None:
        """Moves whatever tensors the strategy keeps (exemplars, class means) to ``device``."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"strategy {self.name}: unexpected saved tensors {sorted(state)[:3]}")


class SharedExpertMixin:
    """Naive partial fine-tuning: one set of experts, added with the first task and never frozen."""

    SHARED_KEY = "shared"

    def _ensure_shared_experts(self, learner: "LearnerView") -> None:
        if self.SHARED_KEY not in learner.backbone.image.expert_tasks:
            learner.backbone.add_task_experts(self.SHARED_KEY, learner.config.experts_per_task)

    def before_task(self, learner: "LearnerView", task_key: str) -> None:
        self._ensure_shared_experts(learner)

    def restore_task_structure(self, learner: "LearnerView", task_key: str) -> None:
        self._ensure_shared_experts(learner)
