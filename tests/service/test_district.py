"""A room's district rpcs on a real daemon: its own statistics out, another room's sums in, through the
commit gate. The Flower round over several rooms is tests/district/test_round.py."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import grpc
import pytest

from district.statistics import RoomStatistics, merge
from model.learner import Learner
from service._proto import mcil_pb2
from service.client import Client

from .conftest import Running, examples, make_config, task_data

pytestmark = pytest.mark.integration

SUCCEEDED = mcil_pb2.JOB_STATE_SUCCEEDED
REJECTED = mcil_pb2.JOB_STATE_REJECTED


def _teach(client: Client, names: list[str], first_index: int, seed: int = 0, per_class: int = 8) -> None:
    data = task_data(names, per_class=per_class, seed=seed, first_index=first_index)
    job = client.wait(client.learn(names, examples(data)).job_id)
    assert job.state == SUCCEEDED, job.message


def _statistics(client: Client, room: str) -> RoomStatistics:
    header, data = client.room_statistics()
    statistics = RoomStatistics.from_bytes(data)
    statistics.room = room
    assert header.digest == statistics.digest() and header.identity == statistics.identity
    return statistics


def _install(client: Client, others: RoomStatistics, round_number: int = 1) -> mcil_pb2.Job:
    header = mcil_pb2.StatisticsHeader(identity=others.identity, digest=others.digest(), round=round_number,
                                       rooms=["other"], size_bytes=len(others.to_bytes()))
    reply = client.install_district_merge(header, others.to_bytes())
    return client.wait(reply.job_id)


def test_a_room_installs_another_rooms_sums_exactly_and_only_once(start_daemon: Callable[..., Running],
                                                                   tmp_path: Path) -> None:
    a = start_daemon(make_config(tmp_path / "a"))
    b = start_daemon(make_config(tmp_path / "b"))
    _teach(a.client, ["clap", "drum"], 0)
    _teach(b.client, ["bell", "whistle"], 2, seed=1)
    from_b = _statistics(b.client, "b")
    assert from_b.classes == ["bell", "whistle"] and from_b.examples["av"] > 0

    job = _install(a.client, from_b)
    assert job.state == SUCCEEDED and job.committed_version == 2, job.message
    assert list(job.class_names) == ["bell", "whistle"]
    assert a.client.list_classes().class_names == ["clap", "drum", "bell", "whistle"]
    # What a shares is still only its own: the received sums never leave it again.
    assert _statistics(a.client, "a").classes == ["clap", "drum"]
    # The same merge again changes nothing and commits nothing.
    again = _install(a.client, from_b, round_number=2)
    assert again.state == SUCCEEDED and again.committed_version == 0 and "nothing new" in again.message
    assert a.client.list_versions().current_version == 2
    # Unchanged statistics are not sent again.
    header, data = a.client.room_statistics(known_digest=_statistics(a.client, "a").digest())
    assert header.unchanged and data == b""

    # The installed head is the one taught centrally on both rooms' examples.
    installed = Learner.load(a.config.server.state_dir / "versions" / "000002")
    union = merge([_statistics(a.client, "a"), from_b])
    assert installed.classes == union.classes
    for p, s in union.paths.items():
        assert installed.head is not None
        assert (installed.head.stats[p].gram.numpy() == s.gram()).all()


def test_a_merge_of_another_base_or_one_the_gate_refuses_changes_nothing(
        start_daemon: Callable[..., Running], tmp_path: Path) -> None:
    a = start_daemon(make_config(tmp_path / "a", gate__max_forgetting="10"))
    other = start_daemon(make_config(tmp_path / "other", server__strategy="simplecil"))
    _teach(a.client, ["clap", "drum"], 0)
    _teach(other.client, ["bell", "whistle"], 2, seed=1)
    with pytest.raises(grpc.RpcError) as refused:
        _install(a.client, _statistics(other.client, "other"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "statistics.identity" in refused.value.details()  # type: ignore[attr-defined]

    # A room that taught three times as many same-looking examples under other names: a's own classes
    # would now be answered with the other room's names.
    confusable = start_daemon(make_config(tmp_path / "c"))
    _teach(confusable.client, ["bell", "whistle"], 0, seed=1, per_class=24)
    job = _install(a.client, _statistics(confusable.client, "c"))
    assert job.state == REJECTED and "forgetting" in job.message, job.message
    assert a.client.list_versions().current_version == 1
    assert a.client.list_classes().class_names == ["clap", "drum"]
    assert sorted(p.name for p in (a.config.server.state_dir / "versions").iterdir()) == ["000001"]


def test_bad_statistics_are_refused_by_name(start_daemon: Callable[..., Running], tmp_path: Path) -> None:
    a = start_daemon(make_config(tmp_path / "a"))
    _teach(a.client, ["clap", "drum"], 0)
    header = mcil_pb2.StatisticsHeader(round=1, rooms=["b"], size_bytes=5)
    with pytest.raises(grpc.RpcError) as bad:
        a.client.install_district_merge(header, b"12345")
    assert "statistics.statistics" in bad.value.details()  # type: ignore[attr-defined]
    header.size_bytes = 9
    with pytest.raises(grpc.RpcError) as short:
        a.client.install_district_merge(header, b"12345")
    assert "data" in short.value.details()  # type: ignore[attr-defined]
    assert a.client.list_versions().current_version == 1


def test_mcil_district_identity_prints_what_every_room_must_share(start_daemon: Callable[..., Running],
                                                                  tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import main

    a = start_daemon(make_config(tmp_path / "a"))
    _teach(a.client, ["clap", "drum"], 0)
    assert main(["--target", a.target, "district", "identity"]) == 0
    printed = capsys.readouterr().out
    assert f"identity  {_statistics(a.client, 'a').identity}" in printed and "clap, drum" in printed
    assert main(["district", "round", "--superlink", "district", "--identity", "x", "--state-dir",
                 str(tmp_path / "ledger"), "--app", str(tmp_path)]) == 2
    assert "not a Flower App folder" in capsys.readouterr().err


def test_a_room_that_taught_nothing_joins_and_then_learns_on_top(start_daemon: Callable[..., Running],
                                                                   tmp_path: Path) -> None:
    fresh = start_daemon(make_config(tmp_path / "fresh"))
    b = start_daemon(make_config(tmp_path / "b"))
    _teach(b.client, ["bell", "whistle"], 2, seed=1)
    empty = _statistics(fresh.client, "fresh")
    assert empty.classes == [] and empty.examples == {"av": 0, "visual": 0, "audio": 0}

    job = _install(fresh.client, _statistics(b.client, "b"))
    assert job.state == SUCCEEDED and job.committed_version == 1, job.message
    assert fresh.client.list_classes().class_names == ["bell", "whistle"]
    assert _statistics(fresh.client, "fresh").classes == []  # received sums are never shared on
    _teach(fresh.client, ["clap", "drum"], 0)  # the evaluation counts only the task taught here
    assert fresh.client.list_classes().class_names == ["bell", "whistle", "clap", "drum"]
    assert _statistics(fresh.client, "fresh").classes == ["clap", "drum"]
