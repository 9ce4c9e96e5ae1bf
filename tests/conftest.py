"""Shared fixtures: the `tiny` backbone (built once), learners around copies of it, synthetic data."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
import torch

from model.backbone import TriModalBackbone, build_backbone
from model.learner import Learner
from model.learner_config import LearnerConfig
from model.samples import LabeledSample
from model.strategies import create_strategy
from model.synthetic import make_dataset
from model.training import TrainingConfig

# The tests run tiny models, where thread start-up costs more than it saves; one thread also keeps
# in-process tests from fighting the daemons that other tests start as subprocesses.
torch.set_num_threads(1)

AVMNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "avmnist"

FAST = LearnerConfig(training=TrainingConfig(epochs=15, min_steps=0, batch_size=16, learning_rate=3e-3))
"""Enough training for the tiny model to learn a synthetic task well (seconds on one core)."""


@pytest.fixture(scope="session")
def tiny_backbone() -> TriModalBackbone:
    return build_backbone("tiny")


@pytest.fixture
def make_learner(tiny_backbone: TriModalBackbone) -> Callable[..., Learner]:
    """``make_learner("mcil", config=...)``: a fresh learner on a private copy of the tiny backbone."""

    def make(strategy: str = "mcil", config: LearnerConfig = FAST) -> Learner:
        return Learner(copy.deepcopy(tiny_backbone), create_strategy(strategy), config, "tiny")

    return make


@pytest.fixture(scope="session")
def two_tasks() -> dict[str, list[LabeledSample]]:
    """Two 2-class synthetic tasks, with separate training and held-out samples."""
    return {
        "train1": make_dataset(["red", "green"], 30, seed=1),
        "test1": make_dataset(["red", "green"], 15, seed=2),
        "train2": make_dataset(["blue", "yellow"], 30, seed=3, first_index=2),
        "test2": make_dataset(["blue", "yellow"], 15, seed=4, first_index=2),
    }


@pytest.fixture
def avmnist() -> Path:
    if not (AVMNIST / "train.csv").exists():
        pytest.skip(f"AV-MNIST data not found at {AVMNIST} (see the README's data section)")
    return AVMNIST


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One PyTorch thread for a module's tests: they run small batches, where one thread is faster and
    immune to a busy machine (a tool under test that sets the count gets it restored). Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
