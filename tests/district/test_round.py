"""Acceptance: rooms that are real daemons (tiny preset) share what each was taught through a real Flower
district on loopback (a SuperLink, one SuperNode per room, TLS and SuperNode authentication on)."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from district.cli import print_round
from district.local import LocalDistrict, make_node_key
from district.room import RoomLink
from model.backbone import TriModalBackbone
from model.learner import Learner, create_learner
from model.samples import LabeledSample
from service._proto import mcil_pb2
from service.client import Client, sample_from_arrays
from service.codec import DecodeLimits, decode_labeled
from service.server import create_server

from ..service.conftest import examples, make_config, task_data

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("flower-superlink") is None,
                                 reason="Flower is not installed (pip install -e '.[test]' installs it)")]

SUCCEEDED = "JOB_STATE_SUCCEEDED"


class Room:
    """A real daemon with an admin token, and what it was taught (training examples only)."""

    def __init__(self, name: str, directory: Path, backbone: TriModalBackbone, strategy: str = "mcil") -> None:
        directory.mkdir(parents=True)
        token = directory / "token"
        token.write_text(f"district-secret-{name}\n")
        config = make_config(directory / "state", security__token_file=str(token), server__strategy=strategy)
        self.server, port = create_server(config, backbone=backbone)
        self.name, self.config = name, config
        self.link = RoomLink(name, f"127.0.0.1:{port}", token_file=token, install_timeout=120)
        self.client = Client(self.link.daemon, token=f"district-secret-{name}", timeout=60)
        self.uploads: list[tuple[list[str], list[tuple[LabeledSample, bool]]]] = []  # (classes, (example, held))

    def teach(self, names: list[str], patterns: list[int], seed: int) -> None:
        data: list[LabeledSample] = []
        for name, pattern in zip(names, patterns):
            data += task_data([name], per_class=10, seed=seed, first_index=pattern)
        held = [i % 5 == 0 for i in range(len(data))]  # explicit, so the central head sees the same examples
        job = self.client.wait(self.client.learn(names, examples(data, held)).job_id)
        assert job.state == mcil_pb2.JOB_STATE_SUCCEEDED, job.message
        self.uploads.append((names, list(zip(data, held))))

    @property
    def taught(self) -> list[LabeledSample]:
        return [s for _, uploaded in self.uploads for s, held in uploaded if not held]

    def version(self) -> int:
        return int(self.client.list_versions().current_version)

    def learner(self, backbone: TriModalBackbone) -> Learner:
        return Learner.load(self.config.server.state_dir / "versions" / f"{self.version():06d}", backbone=backbone)

    def stop(self) -> None:
        self.client.close()
        self.server.stop(1.0)


@pytest.fixture
def district(tmp_path: Path) -> Iterator[LocalDistrict]:
    d = LocalDistrict(tmp_path / "district")
    yield d
    d.stop()


def _central(rooms: dict[str, Room], backbone: TriModalBackbone) -> Learner:
    """One learner taught every room's examples, as each room's daemon decoded and batched them (one task per
    upload, class names case-folded): the head taught centrally on the union of the rooms' examples."""
    central = create_learner("tiny", "mcil", backbone=backbone)
    for room in rooms.values():
        for names, uploaded in room.uploads:
            by_class: dict[str, list[LabeledSample]] = {n: [] for n in names}
            for example, held in uploaded:
                if not held:
                    decoded = decode_labeled("example", example.label, sample_from_arrays(
                        example.image, example.audio, example.sample_rate), DecodeLimits())
                    by_class[example.label].append(replace(decoded, label=example.label.casefold()))
            central.learn_task([s for n in names for s in by_class[n]], [n.casefold() for n in names])
    return central


def _assert_equals_central(room: Learner, central: Learner, taught: list[LabeledSample]) -> None:
    """Per path: the same statistics, ridge, weights and scores (for every example taught anywhere), each
    to 1e-6 relative; not bit for bit, as the sums come in another order. (The central learner encodes
    each upload as its room did: the encoders' float32 features of an example move by ~1e-8 with the
    batch it is encoded in, which the nearly singular audio path of the tiny preset's synthetic tones
    turns into differences of a few 1e-6 in its weights.)"""
    assert room.head is not None and central.head is not None
    columns = [central.classes.index(c.casefold()) for c in room.classes]
    assert sorted(c.casefold() for c in room.classes) == sorted(central.classes)
    batch = room.encode_inputs(taught)
    features = {p: x for p, (_, x) in room.head_inputs(batch).items()}
    for path, stats in central.head.stats.items():
        mine = room.head.stats[path]
        assert torch.allclose(mine.gram, stats.gram, rtol=0, atol=1e-6 * float(stats.gram.abs().max()))
        assert torch.allclose(mine.targets, stats.targets[:, columns], rtol=0,
                              atol=1e-6 * float(stats.targets.abs().max()))
        assert torch.equal(mine.counts, stats.counts[columns])
        assert room.head.ridge[path] == central.head.ridge[path]
        weights = central.head.weights[path][:, columns].double()
        assert float((room.head.weights[path].double() - weights).abs().max() / weights.abs().max()) <= 1e-6
        expected = central.head.scores(features[path], path)[:, columns].double()
        error = (room.head.scores(features[path], path).double() - expected).abs().max() / expected.abs().max()
        assert float(error) <= 1e-6, (path, float(error))


def _taught(rooms: dict[str, Room]) -> list[LabeledSample]:
    return [s for r in rooms.values() for s in r.taught]


def _answers(room: Room, patterns: dict[str, int]) -> dict[str, str]:
    out = {}
    for name, pattern in patterns.items():
        sample = task_data([name], per_class=1, seed=123, first_index=pattern)[0]
        reply = room.client.classify([sample_from_arrays(sample.image, sample.audio, sample.sample_rate)])
        top = reply.results[0]
        out[name] = "unknown" if top.unknown else top.classes[0].name.casefold()
    return out


def test_three_rooms_share_exactly_through_flower(district: LocalDistrict, tiny_backbone: TriModalBackbone,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rooms = {n: Room(n, tmp_path / n, tiny_backbone) for n in ("room-a", "room-b", "room-c")}
    other = Room("room-x", tmp_path / "room-x", tiny_backbone, strategy="simplecil")  # another head: not mergeable
    try:
        a, b, c = rooms.values()
        a.teach(["clap", "drum"], [0, 1], seed=1)
        b.teach(["bell", "Clap"], [2, 0], seed=2)  # "clap" taught in two rooms: one class
        c.teach(["whistle", "siren"], [3, 4], seed=3)
        other.teach(["chalk", "door"], [5, 6], seed=4)
        identity = a.client.room_statistics()[0].identity
        district.start({r.name: r.link for r in [*rooms.values(), other]})
        make_node_key(district.keys, "intruder")  # never registered
        intruder = district.start_supernode(RoomLink("intruder", a.link.daemon), district.keys / "intruder")

        first = district.round(identity, rooms=4, timeout=60)
        assert set(first["rooms"]) == set(rooms) and "room-x" in first["refused"], first
        for r in rooms.values():
            assert first["rooms"][r.name]["install"]["state"] == SUCCEEDED, first["rooms"][r.name]
            assert first["rooms"][r.name]["bytes_sent"] > 0
        assert other.version() == 1 and other.client.list_classes().class_names == ["chalk", "door"]
        print_round(first)  # what `mcil district round` prints
        printed = capsys.readouterr().out
        assert "round 1: 3 room(s) answered" in printed and "room-x" in printed and "REFUSED" in printed
        assert "gained bell, whistle, siren" in printed  # room-a's new classes, in room-name order
        central = _central(rooms, tiny_backbone)
        patterns = {"clap": 0, "drum": 1, "bell": 2, "whistle": 3, "siren": 4}
        for r in rooms.values():
            _assert_equals_central(r.learner(tiny_backbone), central, _taught(rooms))
            assert _answers(r, patterns) == {n: n for n in patterns}, r.name
        versions = {r.name: r.version() for r in rooms.values()}

        # A second round with nothing new taught changes nothing.
        second = district.round(identity, rooms=4, timeout=60)
        for r in rooms.values():
            assert second["rooms"][r.name]["install"]["state"] == SUCCEEDED
            assert second["rooms"][r.name]["install"]["version"] == 0, second["rooms"][r.name]
            assert r.version() == versions[r.name]
        for r in rooms.values():  # what a room shares is its own, so nothing it received changes it
            assert second["rooms"][r.name]["unchanged"] and second["rooms"][r.name]["bytes_sent"] == 0

        # One room teaches one more class and another is lost mid-round: the lost room is named, the
        # others gain exactly that class, and the lost room's own version is untouched.
        a.teach(["chime"], [7], seed=5)
        c_version = c.version()
        district.kill("room-c")
        third = district.round(identity, rooms=4, timeout=8, wait=1)
        assert "room-c" in third["silent"] or third["rooms"].get("room-c", {}).get("install", {}).get(
            "state") == "NO_ANSWER", third
        assert third["rooms"]["room-b"]["install"]["classes_gained"] == ["chime"]
        assert third["rooms"]["room-a"]["install"]["version"] == 0  # nothing new for the room that taught it
        assert c.version() == c_version and "chime" not in c.client.list_classes().class_names
        central = _central(rooms, tiny_backbone)  # room-c's contribution of round 1 still counts
        for r in (a, b):
            _assert_equals_central(r.learner(tiny_backbone), central, _taught(rooms))

        # A SuperNode whose key was never registered was refused and exited.
        deadline = time.monotonic() + 60
        while intruder.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert intruder.returncode not in (None, 0)
        assert "Failed to activate SuperNode" in district.log("supernode-intruder")
    finally:
        for r in [*rooms.values(), other]:
            r.stop()


def test_the_statistics_a_room_sends_are_its_own_sums(tiny_backbone: TriModalBackbone, tmp_path: Path) -> None:
    """What leaves a room: per path the upper triangle of G, C and the counts of the classes taught."""
    room = Room("room-a", tmp_path / "a", tiny_backbone)
    try:
        room.teach(["clap", "drum"], [0, 1], seed=1)
        from district.statistics import RoomStatistics

        header, data = room.client.room_statistics()
        statistics = RoomStatistics.from_bytes(data)
        learner = room.learner(tiny_backbone)
        assert learner.head is not None and statistics.classes == ["clap", "drum"]
        for path, sums in statistics.paths.items():
            own = learner.head.stats[path]
            assert np.array_equal(sums.gram(), own.gram.numpy())
            assert torch.equal(torch.from_numpy(sums.targets), own.targets)
            assert sums.gram_upper.size == own.gram.shape[0] * (own.gram.shape[0] + 1) // 2
        assert sorted(header.class_names) == ["clap", "drum"]
    finally:
        room.stop()
