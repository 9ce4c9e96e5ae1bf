"""The district's memory between rounds: the latest contribution of every room, and the round count.

    <state-dir>/
        district.json          {"round": N, "identity": ..., "rooms": {room: {"digest", "classes", "round"}}}
        rooms/<room>.npz       that room's latest statistics (district.statistics.RoomStatistics)

A room that sends nothing new (its digest is the one held here) is not asked for its bytes again,
and a room that does not answer a round still counts with its latest contribution: the merge of a
round is always solved from the latest contribution of every room. Files are replaced atomically
(written aside, fsynced, renamed), so a round cut short leaves the previous state readable.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from district.statistics import RoomStatistics, StatisticsError, merge

ROOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_room_name(room: str) -> str:
    if not ROOM_NAME.match(room):
        raise StatisticsError("room", f"{room!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                              "or digit")
    return room


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Ledger:
    """See the module docstring."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        (self.directory / "rooms").mkdir(parents=True, exist_ok=True)
        index = self.directory / "district.json"
        self.state: dict[str, Any] = json.loads(index.read_text()) if index.exists() else {"round": 0, "rooms": {}}

    @property
    def round(self) -> int:
        return int(self.state.get("round", 0))

    @property
    def rooms(self) -> list[str]:
        return sorted(self.state.get("rooms", {}))

    def digest(self, room: str) -> str:
        return str(self.state.get("rooms", {}).get(room, {}).get("digest", ""))

    def contribution(self, room: str) -> RoomStatistics:
        data = (self.directory / "rooms" / f"{check_room_name(room)}.npz").read_bytes()
        statistics = RoomStatistics.from_bytes(data)
        statistics.room = room
        return statistics

    def record(self, statistics: RoomStatistics, round_number: int) -> None:
        """Keeps ``statistics`` as its room's latest contribution (the index is written last)."""
        room = check_room_name(statistics.room)
        _write_atomic(self.directory / "rooms" / f"{room}.npz", statistics.to_bytes())
        self.state.setdefault("rooms", {})[room] = {"digest": statistics.digest(), "classes": statistics.classes,
                                                     "round": round_number}
        self._save()

    def start_round(self, identity: str) -> int:
        """The next round's number (saved at once: a round cut short is not numbered again)."""
        if self.state.get("identity") not in (None, identity):
            raise StatisticsError("identity", f"this district's state was made with identity "
                                  f"{str(self.state['identity'])[:12]}, the round asks for {identity[:12]}; "
                                  "use another state directory for another base")
        self.state["identity"] = identity
        self.state["round"] = self.round + 1
        self._save()
        return self.round

    def others(self, room: str) -> tuple[list[str], RoomStatistics | None]:
        """The rooms other than ``room`` and the sum of their latest contributions (sorted by name)."""
        names = [r for r in self.rooms if r != room]
        if not names:
            return [], None
        return names, merge([self.contribution(r) for r in names], room="district")

    def _save(self) -> None:
        _write_atomic(self.directory / "district.json", json.dumps(self.state, indent=2, sort_keys=True).encode())


__all__ = ["Ledger", "check_room_name"]
