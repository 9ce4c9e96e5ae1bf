"""Fixtures for the daemon tests: tiny-preset configs, in-process daemons on port 0, example messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest

from model.backbone import TriModalBackbone
from model.samples import LabeledSample
from model.synthetic import make_dataset
from service._proto import mcil_pb2
from service.client import Client, sample_from_arrays
from service.config import ServiceConfig
from service.config_loader import load_config
from service.server import DaemonServer, create_server
from service.store import StateStore

FAST_SETTINGS = {
    "server.preset": "tiny",
    "server.listen": "127.0.0.1:0",
    "server.metrics_listen": "127.0.0.1:0",
    "server.grace_seconds": "2",
    "learning.epochs": "2",
    "learning.min_steps": "0",
    "learning.batch_size": "16",
    "learning.learning_rate": "0.003",
    "learning.min_examples_per_class": "4",
    "batching.max_delay_ms": "2",
    "gate.max_forgetting": "null",  # the tiny model forgets a lot in two epochs; gate tests set their own
    "server.compiled": "false",  # compiling takes ~10 s a version; tests/service/test_compiled_serving.py covers it
}
"""The tiny preset with two epochs (and no minimum number of steps): a task trains and commits in about a second."""


def make_config(state_dir: Path, **overrides: Any) -> ServiceConfig:
    settings: dict[str, Any] = {**FAST_SETTINGS, "server.state_dir": str(state_dir)}
    settings.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_config(None, settings)


def examples(data: Sequence[LabeledSample], held_out: Sequence[bool] | None = None) -> list[mcil_pb2.LabeledExample]:
    """Labelled samples as upload messages (raw tensors)."""
    flags = held_out or [False] * len(data)
    return [mcil_pb2.LabeledExample(label=s.label, held_out=h,
                                    sample=sample_from_arrays(s.image, s.audio, s.sample_rate))
            for s, h in zip(data, flags)]


def task_data(names: Sequence[str], per_class: int = 6, seed: int = 0, first_index: int = 0) -> list[LabeledSample]:
    return make_dataset(list(names), per_class, seed=seed, first_index=first_index)


class Running:
    """An in-process daemon and a client to it."""

    def __init__(self, server: DaemonServer, port: int, config: ServiceConfig) -> None:
        self.server = server
        self.port = port
        self.config = config
        self.target = f"127.0.0.1:{port}"
        self.client = Client(self.target, timeout=60)

    def stop(self) -> None:
        self.client.close()
        self.server.stop(1.0)


@pytest.fixture
def start_daemon(tiny_backbone: TriModalBackbone) -> Iterator[Callable[..., Running]]:
    """``start_daemon(config)`` starts a daemon (stopped at the end of the test)."""
    started: list[Running] = []

    def start(config: ServiceConfig) -> Running:
        server, port = create_server(config, backbone=tiny_backbone)
        running = Running(server, port, config)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    """An open state directory under ``tmp_path / "state"`` (closed after the test)."""
    s = StateStore(tmp_path / "state")
    s.open()
    yield s
    s.close()
