"""Saving and loading a learner version: one directory of a JSON file and safetensors files.

    learner.json             format_version, preset, strategy, config, tasks (key and classes, in order),
                             and the statistics head's metadata
    learned.safetensors      what the backbone learned (experts, routers, trainable projections) and the
                             fusion module: ``backbone.*`` and ``fusion.*``
    prototypes.safetensors   ``prototypes`` (C, E), and the old classes' feature statistics (strategies
                             that replay them)
    head.safetensors         the statistics head's accumulated statistics and solution (if any)
    strategy.safetensors     the strategy's own tensors: exemplars (icarl, cign with rehearsal), a
                             network (cign, mmcl); versions saved before it was named so call it
                             exemplars.safetensors

Files hold CPU tensors; a loaded learner runs where its backbone is. A missing, corrupt or mismatched
file raises ``CheckpointError``. ``Learner.save`` and ``Learner.load`` call :func:`save_version` and
:func:`load_version`; the learner is seen through ``SavedLearner`` (a Protocol), so this module never
imports it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable, Protocol, Sequence, TypeVar

import torch
from safetensors.torch import load_file, save_file

from model.backbone import TriModalBackbone, WeightFiles, build_backbone
from model.errors import CheckpointError
from model.heads import StatisticsHead
from model.learner_config import LearnerConfig
from model.replay import ClassStatistics
from model.strategies import create_strategy
from model.strategies.base import LearnerView, Strategy

FORMAT_VERSION = 1
STRATEGY_FILE = "strategy.safetensors"
OLD_STRATEGY_FILE = "exemplars.safetensors"  # its name in versions saved before networks


class SavedLearner(LearnerView, Protocol):
    """What a saved version holds of the learner (``model.learner.Learner`` is one); loading hands it
    to its strategy (``restore_task_structure``), hence a ``LearnerView`` too."""

    strategy: Strategy
    preset: str
    fusion: torch.nn.Module
    class_statistics: ClassStatistics
    head: StatisticsHead | None

    @property
    def device(self) -> torch.device: ...

    @property
    def task_keys(self) -> list[str]: ...

    @property
    def revisited(self) -> list[list[str]]: ...

    def learned_tensors(self) -> dict[str, torch.Tensor]: ...

    def restore_tasks(self, tasks: Sequence[tuple[str, list[str]]],
                      revisited: Sequence[list[str]] | None = None) -> None: ...


L = TypeVar("L", bound=SavedLearner)


def save_version(learner: SavedLearner, directory: Path) -> None:
    """Writes ``learner.json``, ``learned.safetensors``, ``prototypes.safetensors`` (and
    ``head.safetensors`` for a statistics head, ``strategy.safetensors`` for strategies with tensors
    of their own) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "format_version": FORMAT_VERSION,
        "preset": learner.preset,
        "strategy": learner.strategy.name,
        "config": learner.config.to_dict(),
        "tasks": [{"key": key, "classes": classes, **({"revisited": again} if again else {})}
                  for key, classes, again in zip(learner.task_keys, learner.tasks, learner.revisited)],
    }
    if learner.head is not None:
        meta["head"] = learner.head.metadata()
        save_file(learner.head.state_dict(), str(directory / "head.safetensors"))
    save_file(learner.learned_tensors(), str(directory / "learned.safetensors"))
    prototypes = {"prototypes": learner.prototypes.cpu().contiguous()}
    if learner.strategy.replays_features:
        prototypes.update(learner.class_statistics.state_dict())
    save_file(prototypes, str(directory / "prototypes.safetensors"))
    strategy_state = learner.strategy.state_dict()
    if strategy_state:
        save_file({k: v.cpu().contiguous() for k, v in strategy_state.items()},
                  str(directory / STRATEGY_FILE))
    (directory / "learner.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


def load_version(directory: Path, build: Callable[[TriModalBackbone, Strategy, LearnerConfig, str], L],
                 backbone: TriModalBackbone | None = None, weights: WeightFiles | None = None) -> L:
    """Loads a saved learner, made by ``build(backbone, strategy, config, preset)`` (the ``Learner``
    class); a missing, corrupt or mismatched file raises CheckpointError. A given ``backbone`` is
    copied (the caller's learned state is never touched) and must be fresh (no experts)."""
    directory = Path(directory)
    meta_path = directory / "learner.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(str(directory), "learner.json", "missing") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(str(directory), "learner.json", f"unreadable: {exc}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(str(meta_path), "format_version", f"unsupported {meta.get('format_version')!r}")
    config = LearnerConfig.from_dict(meta["config"])
    if backbone is None:
        backbone = build_backbone(meta["preset"], weights)
    else:
        backbone = copy.deepcopy(backbone)  # never touch the caller's learned state
    learner = build(backbone, create_strategy(meta["strategy"]), config, meta["preset"])
    if backbone.image.expert_tasks:
        raise ValueError("backbone: must be fresh (no experts) to load a saved learner into")
    for task in meta["tasks"]:
        learner.strategy.restore_task_structure(learner, task["key"])
    if backbone.projections_trainable and meta["tasks"]:
        backbone.projections.requires_grad_(False)
    learner.restore_tasks([(t["key"], list(t["classes"])) for t in meta["tasks"]],
                          [list(t.get("revisited", [])) for t in meta["tasks"]])
    tensors = _read_safetensors(directory / "learned.safetensors")
    try:
        backbone.load_learned_state({k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")})
        learner.fusion.load_state_dict({k[len("fusion."):]: v for k, v in tensors.items() if k.startswith("fusion.")})
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(str(directory / "learned.safetensors"), "state", str(exc)) from None
    saved_prototypes = _read_safetensors(directory / "prototypes.safetensors")
    learner.prototypes = saved_prototypes.get("prototypes", torch.zeros(0)).to(learner.device)
    if learner.prototypes.shape != (len(learner.classes), backbone.embed_dim):
        raise CheckpointError(str(directory / "prototypes.safetensors"), "prototypes",
                              f"shape {tuple(learner.prototypes.shape)} does not match "
                              f"{len(learner.classes)} classes x {backbone.embed_dim}")
    if learner.strategy.replays_features:
        try:
            learner.class_statistics.load_state_dict(saved_prototypes, len(learner.classes))
        except ValueError as exc:
            raise CheckpointError(str(directory / "prototypes.safetensors"), "class statistics", str(exc)) from None
    if learner.head is not None and meta["tasks"]:
        learner.head.load_state_dict(_read_safetensors(directory / "head.safetensors"), meta.get("head", {}),
                                     str(directory / "head.safetensors"))
        if learner.head.classes != len(learner.classes):
            raise CheckpointError(str(directory / "head.safetensors"), "head",
                                  f"{learner.head.classes} classes for {len(learner.classes)} learned")
    state_file = next((directory / n for n in (STRATEGY_FILE, OLD_STRATEGY_FILE) if (directory / n).exists()),
                      directory / STRATEGY_FILE)
    if (learner.strategy.keeps_exemplars or learner.strategy.network is not None or state_file.exists()) \
            and meta["tasks"]:
        try:
            learner.strategy.load_state_dict(_read_safetensors(state_file))
        except ValueError as exc:
            raise CheckpointError(str(state_file), "strategy state", str(exc)) from None
        learner.strategy.to(learner.device)
    return learner


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(str(path.parent), path.name, "missing") from None
    except Exception as exc:  # safetensors raises its own error types for truncated or corrupt files
        raise CheckpointError(str(path.parent), path.name, f"corrupt: {exc}") from None
