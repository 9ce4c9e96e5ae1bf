"""What a training job is: its upload, its record (written to the state directory at every change),
its outcome, and the warnings it carries. The runner that moves jobs along is :mod:`service.jobs`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from model.samples import LabeledSample
    from service.district import DistrictInstall

ENDED = ("succeeded", "rejected", "failed", "cancelled")


def same_names(names: Sequence[str], others: Sequence[str]) -> list[str]:
    """The names in ``names`` that ``others`` already holds, ignoring case (``Red`` is ``red``)."""
    taken = {o.casefold() for o in others}
    return sorted(n for n in names if n.casefold() in taken)


MAX_JOB_ID_LENGTH = 64  # ids are 16 hex digits; anything longer is refused before use
INTERRUPTED = "interrupted: the daemon stopped before the job finished"
KEEP_JOB_RECORDS = 500


@dataclass(frozen=True)
class Upload:
    """A validated LearnNewClasses upload: one task's classes and their examples."""

    request_id: str
    digest: str  # SHA-256 of the upload, to tell a true retry from a reused request_id
    class_names: tuple[str, ...]
    train: Sequence["LabeledSample"]
    held_out: Sequence["LabeledSample"]
    # Set for a district round's merge (service/district.py), which teaches nothing: ``class_names``
    # are then the classes it brings, ``train`` and ``held_out`` empty.
    district: "DistrictInstall | None" = None


@dataclass(frozen=True)
class Job:
    """A snapshot of one job (the runner replaces it at every change; fields mirror ``mcil.v1.Job``)."""

    job_id: str
    request_id: str
    digest: str
    class_names: tuple[str, ...]
    state: str = "queued"
    phase: str = "queued"
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    loss: float | None = None
    eta_seconds: float | None = None
    base_version: int = 0
    committed_version: int = 0
    figures: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    held_out_per_task: tuple[int, ...] = ()
    message: str = ""
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    train_examples: int = 0
    held_out_examples: int = 0
    warnings: tuple[str, ...] = ()
    revision: int = 0

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        data["held_out_per_task"] = list(self.held_out_per_task)
        data["warnings"] = list(self.warnings)
        data["figures"] = {k: dict(v) for k, v in self.figures.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Job":
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["class_names"] = tuple(kwargs.get("class_names", ()))
        kwargs["held_out_per_task"] = tuple(kwargs.get("held_out_per_task", ()))
        kwargs["warnings"] = tuple(kwargs.get("warnings", ()))  # jobs written before warnings existed have none
        return cls(**kwargs)


ONE_CLASS_FIRST_TASK = (
    "the first task teaches a single class: the cross-entropy over one class is zero, so training on it "
    "learns only from what else the loss holds (for mcil, the MI term that ties the fused feature to each "
    "modality; docs/benchmarks.md, T = 10); teach at least two classes in the first task where you can"
)


def task_warnings(class_names: Sequence[str], known_classes: Sequence[str], pending_classes: Sequence[str],
                  *, learner_trains: bool = True) -> tuple[str, ...]:
    """What a job should be told, given the classes already served and those of unfinished jobs.
    A learner that does not train (``zero-shot``) only adds the class's text prototype: nothing to warn."""
    first_task = not known_classes and not pending_classes
    return (ONE_CLASS_FIRST_TASK,) if learner_trains and first_task and len(class_names) == 1 else ()


@dataclass(frozen=True)
class TrainingOutcome:
    """What :func:`train` returns to the runner."""

    state: str  # "succeeded" | "rejected"
    figures: Mapping[str, Mapping[str, float]]
    held_out_per_task: tuple[int, ...]
    committed_version: int = 0
    message: str = ""
