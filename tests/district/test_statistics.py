"""What a room shares and how the district adds it up (NumPy only: no daemon, no Flower)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from district.ledger import Ledger
from district.room import RoomLink
from district.round import RoundConfig
from district.statistics import PathSums, RoomStatistics, StatisticsError, merge, upper_triangle

IDENTITY = "ab" * 32


def _room(name: str, classes: list[str], seed: int, width: int = 5, identity: str = IDENTITY) -> RoomStatistics:
    rng = np.random.default_rng(seed)
    paths = {}
    for p in ("av", "visual"):
        h = rng.standard_normal((8 * len(classes), width))
        y = np.eye(len(classes))[np.arange(len(h)) % len(classes)]
        paths[p] = PathSums(upper_triangle(h.T @ h), h.T @ y, y.sum(axis=0).astype(np.int64),
                            rng.uniform(0, 0.5, len(classes)).astype(np.float32))
    return RoomStatistics(name, identity, classes, paths)


def test_a_statistics_file_round_trips_and_its_digest_names_its_content() -> None:
    room = _room("room-1", ["clap", "drum"], 0)
    back = RoomStatistics.from_bytes(room.to_bytes())
    assert back.digest() == room.digest() and back.classes == room.classes
    assert np.array_equal(back.paths["av"].gram(), room.paths["av"].gram())
    assert np.array_equal(back.paths["av"].gram(), back.paths["av"].gram().T)
    other = _room("room-1", ["clap", "drum"], 1)
    assert other.digest() != room.digest()


def test_merge_adds_sums_and_joins_classes_by_name_case_insensitively() -> None:
    a, b = _room("a", ["clap", "drum"], 0), _room("b", ["bell", "Clap"], 1)
    merged = merge([a, b])
    assert merged.classes == ["clap", "drum", "bell"]
    s = merged.paths["av"]
    assert np.array_equal(s.gram_upper, np.zeros_like(s.gram_upper) + a.paths["av"].gram_upper + b.paths["av"].gram_upper)
    assert np.array_equal(s.targets[:, 0], a.paths["av"].targets[:, 0] + b.paths["av"].targets[:, 1])
    assert s.counts.tolist() == [a.paths["av"].counts[0] + b.paths["av"].counts[1], a.paths["av"].counts[1],
                                 b.paths["av"].counts[0]]
    assert s.thresholds[0] == min(a.paths["av"].thresholds[0], b.paths["av"].thresholds[1])
    # The same contributions in the same order give the same bits.
    assert merge([a, b]).digest() == merged.digest()


def test_bad_statistics_are_refused_by_field() -> None:
    with pytest.raises(StatisticsError, match="rooms.b.identity"):
        merge([_room("a", ["clap"], 0), _room("b", ["bell"], 1, identity="cd" * 32)])
    with pytest.raises(StatisticsError, match="paths.av"):
        merge([_room("a", ["clap"], 0), _room("b", ["bell"], 1, width=6)])
    with pytest.raises(StatisticsError, match="classes"):
        RoomStatistics("a", IDENTITY, ["clap", "CLAP"])
    with pytest.raises(StatisticsError, match="statistics"):
        RoomStatistics.from_bytes(b"not a statistics file")
    room = _room("a", ["clap", "drum"], 0)
    room.paths["av"].targets = room.paths["av"].targets[:, :1]
    with pytest.raises(StatisticsError, match="paths.av"):
        RoomStatistics.from_bytes(room.to_bytes())


def test_the_ledger_keeps_every_rooms_latest_contribution_and_sums_the_others(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger")
    assert ledger.start_round(IDENTITY) == 1
    for name, seed in (("room-b", 1), ("room-a", 0), ("room-c", 2)):
        ledger.record(_room(name, [f"class-{seed}"], seed), 1)
    again = Ledger(tmp_path / "ledger")  # read back from disk
    assert again.round == 1 and again.rooms == ["room-a", "room-b", "room-c"]
    names, others = again.others("room-b")
    assert names == ["room-a", "room-c"] and others is not None
    assert others.digest() == merge([again.contribution("room-a"), again.contribution("room-c")]).digest()
    assert again.digest("room-a") == _room("room-a", ["class-0"], 0).digest()
    with pytest.raises(StatisticsError, match="identity"):
        again.start_round("cd" * 32)
    with pytest.raises(StatisticsError, match="room"):
        again.record(_room("../escape", ["x"], 3), 1)


def test_round_and_node_configs_are_checked_by_field() -> None:
    with pytest.raises(StatisticsError, match="run_config.identity"):
        RoundConfig.from_run_config({"identity": "", "state-dir": "/tmp/l", "result-path": "/tmp/r.json"})
    with pytest.raises(StatisticsError, match="run_config.state-dir"):
        RoundConfig.from_run_config({"identity": IDENTITY, "state-dir": "", "result-path": "/tmp/r.json"})
    with pytest.raises(StatisticsError, match="node_config.daemon"):
        RoomLink.from_node_config({"room": "room-1"})
    with pytest.raises(StatisticsError, match="node_config.room"):
        RoomLink.from_node_config({"room": "room 1", "daemon": "127.0.0.1:50051"})
    link = RoomLink.from_node_config({"room": "room-1", "daemon": "127.0.0.1:50051", "token-file": "/etc/t"})
    assert link.token_file == Path("/etc/t") and link.install_timeout == 600.0


def test_the_ledger_binds_each_room_to_its_node_and_keeps_one_width(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger")
    ledger.start_round(IDENTITY)
    ledger.record(_room("room-a", ["clap"], 0), 1, node=11)
    ledger.record(_room("room-b", ["bell"], 1), 1, node=22)
    with pytest.raises(StatisticsError, match="another node's name"):
        ledger.record(_room("room-a", ["bell"], 2), 2, node=22)  # room-b's node claiming room-a
    with pytest.raises(StatisticsError, match="node 11 is 'room-a'"):
        ledger.record(_room("room-z", ["drum"], 3), 2, node=11)  # room-a's node under a new name
    with pytest.raises(StatisticsError, match="paths.av"):
        ledger.record(_room("room-c", ["drum"], 3, width=6), 2, node=33)
    assert ledger.contribution("room-a").classes == ["clap"] and ledger.rooms == ["room-a", "room-b"]
    # A room taken out (its file removed) no longer counts, and its name is free again after forget.
    (tmp_path / "ledger" / "rooms" / "room-b.npz").unlink()
    again = Ledger(tmp_path / "ledger")
    assert again.rooms == ["room-a"] and again.others("room-a") == ([], None)
    again.forget("room-b")
    again.record(_room("room-b", ["bell"], 4), 3, node=44)
    # One round at a time on a state directory.
    again.lock()
    try:
        with pytest.raises(StatisticsError, match="another round is running"):
            Ledger(tmp_path / "ledger").lock()
    finally:
        again.unlock()


def test_untrusted_statistics_files_are_refused_by_field(tmp_path: Path) -> None:
    import io
    import zipfile

    room = _room("a", ["clap", "drum"], 0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with zipfile.ZipFile(io.BytesIO(room.to_bytes())) as plain:
            for info in plain.infolist():
                archive.writestr(info.filename, plain.read(info))
    with pytest.raises(StatisticsError, match="compressed"):
        RoomStatistics.from_bytes(buffer.getvalue())
    for change, field in ((lambda s: setattr(s.paths["av"], "thresholds", np.full(2, np.nan, np.float32)),
                           "thresholds"),
                          (lambda s: setattr(s.paths["av"], "targets", np.zeros(())), "paths.av"),
                          (lambda s: s.paths["av"].gram_upper.__setitem__(0, -1.0), "gram_upper")):
        bad = _room("a", ["clap", "drum"], 0)
        change(bad)
        with pytest.raises(StatisticsError, match=field):
            RoomStatistics.from_bytes(bad.to_bytes())
    for names in (["", "x"], [" Clap", "x"], ["a" * 129, "x"], ["a\nb", "x"]):
        with pytest.raises(StatisticsError, match="classes"):
            RoomStatistics("a", IDENTITY, names)
