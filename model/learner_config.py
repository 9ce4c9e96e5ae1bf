"""Everything that shapes learning, besides the backbone preset and the strategy: ``LearnerConfig``.

One typed object per component (training, fusion, loss, head), loaded from a saved version's
``learner.json`` with ``LearnerConfig.from_dict``, which reads a field a version predates as the
behaviour of its time (``SETTINGS_BEFORE_THEY_WERE_SAVED``), never as today's default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from model.fusion import FusionConfig
from model.heads import HeadConfig
from model.losses import LossConfig
from model.training import TrainingConfig

# A saved version was trained with the behaviour of its time: a field it does not record is read as
# what that behaviour was, not as today's default (which may have changed since).
SETTINGS_BEFORE_THEY_WERE_SAVED: dict[str, dict[str, Any]] = {
    "learner": {"replay_weighting": "equal",  # replay's loss was added at full weight before the field existed
                "head": {"kind": "prototypes"},  # every version scored with text prototypes before heads
                "rehearsal": False},  # no strategy kept a rehearsal buffer before the field existed
    "training": {"min_steps": 0},  # every task trained for exactly ``epochs`` before the field existed
    "fusion": {"unit_inputs": False},  # AAVFM's cross-attention took raw features before the field existed
    "head": {"fuse": "av"},  # a pair was scored on the joint path alone before the field existed
}
REPLAY_WEIGHTINGS = ("per-class", "equal")


@dataclass(frozen=True)
class LearnerConfig:
    """Everything that shapes learning, besides the backbone preset and the strategy."""

    training: TrainingConfig = field(default_factory=TrainingConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    experts_per_task: int = 2
    text_diversity: bool = True
    exemplars_per_class: int = 20
    distillation_weight: float = 1.0
    modality_dropout: float = 0.3
    replayed_features: int = 32
    rehearsal: bool = False
    """``cign`` only: keep ``exemplars_per_class`` training pairs per class and train on them again
    with every later task (the CIGN paper's buffer). A version then STORES TRAINING DATA."""
    replay_weighting: str = "per-class"
    """How a step's two losses add up, for strategies that replay old classes' features.
    ``"per-class"``: the new examples' loss and the replayed features' loss are weighted by the share
    of classes each stands for (new classes vs old classes), so every class counts alike however
    few a task brings. ``"equal"``: the two are summed at equal weight (before this setting)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ValueError(f"modality_dropout: must lie in [0, 1), got {self.modality_dropout}")
        if self.experts_per_task < 1:
            raise ValueError(f"experts_per_task: must be >= 1, got {self.experts_per_task}")
        if self.exemplars_per_class < 1:
            raise ValueError(f"exemplars_per_class: must be >= 1, got {self.exemplars_per_class}")
        if self.distillation_weight < 0:
            raise ValueError(f"distillation_weight: must be >= 0, got {self.distillation_weight}")
        if self.replayed_features < 0:
            raise ValueError(f"replayed_features: must be >= 0, got {self.replayed_features}")
        if self.replay_weighting not in REPLAY_WEIGHTINGS:
            raise ValueError(f"replay_weighting: one of {list(REPLAY_WEIGHTINGS)}, got {self.replay_weighting!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LearnerConfig":
        data = {**SETTINGS_BEFORE_THEY_WERE_SAVED["learner"], **data}
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"learner config: unknown field(s) {unknown}")
        for name, sub in (("training", TrainingConfig), ("fusion", FusionConfig), ("loss", LossConfig),
                          ("head", HeadConfig)):
            if name in data and isinstance(data[name], dict):
                data[name] = sub(**{**SETTINGS_BEFORE_THEY_WERE_SAVED.get(name, {}), **data[name]})
        return cls(**data)
