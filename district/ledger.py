"""The district's memory between rounds: the latest contribution of every room, and the round count.

    <state-dir>/
        district.json          {"round": N, "identity": ..., "widths": {path: M},
                                "rooms": {room: {"digest", "classes", "round", "node"}}}
        rooms/<room>.npz       that room's latest statistics (district.statistics.RoomStatistics)
        LOCK                   held (flock) while a round runs: one round at a time

A room's name is bound to the Flower node that first answered under it (a node is a registered
SuperNode key): another node answering under that name, or that node under another name, is refused,
so no room can overwrite another's contribution. A contribution whose widths differ from the
district's is refused before it is kept. Removing ``rooms/<room>.npz`` (and the room's entry, or
``forget``) takes a room out of the district.

A room that sends nothing new (its digest is the one held here) is not asked for its bytes again,
and a room that does not answer a round still counts with its latest contribution: the merge of a
round is always solved from the latest contribution of every room. Files are replaced atomically
(written aside, fsynced, renamed), so a round cut short leaves the previous state readable.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path
from typing import Any

from district.statistics import RoomStatistics, StatisticsError, merge
from service.store import write_atomic

ROOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_room_name(room: str) -> str:
    if not ROOM_NAME.match(room):
        raise StatisticsError("room", f"{room!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                              "or digit")
    return room


class Ledger:
    """See the module docstring."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        (self.directory / "rooms").mkdir(parents=True, exist_ok=True)
        index = self.directory / "district.json"
        self.state: dict[str, Any] = json.loads(index.read_text()) if index.exists() else {"round": 0, "rooms": {}}
        self._loaded: dict[str, RoomStatistics] = {}
        self._lock: int | None = None

    def lock(self) -> None:
        """Holds the district's lock until this process ends or ``unlock``; another round running
        on the same state directory is an error."""
        fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StatisticsError("state-dir", f"{self.directory}: another round is running on it") from None
        self._lock = fd

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    @property
    def round(self) -> int:
        return int(self.state.get("round", 0))

    @property
    def rooms(self) -> list[str]:
        """The rooms with a contribution on file (an entry whose file was removed is left out)."""
        return sorted(r for r in self.state.get("rooms", {}) if (self.directory / "rooms" / f"{r}.npz").exists())

    def check_node(self, room: str, node: int) -> None:
        """Refuses a name another node answered under first, and a node that answered under another name."""
        entry = self.state.get("rooms", {}).get(room)
        if entry is not None and entry.get("node") not in (None, node):
            raise StatisticsError("room", f"{room!r} is another node's name in this district (node "
                                  f"{entry['node']}; this is node {node}); forget the room to rename it")
        for other, e in self.state.get("rooms", {}).items():
            if other != room and e.get("node") == node:
                raise StatisticsError("room", f"node {node} is {other!r} in this district, not {room!r}")

    def check_widths(self, statistics: RoomStatistics) -> None:
        widths = self.state.get("widths") or {}
        for p, s in statistics.paths.items():
            if p in widths and int(widths[p]) != s.width:
                raise StatisticsError(f"paths.{p}", f"width {s.width}, the district's is {widths[p]}")

    def digest(self, room: str) -> str:
        return str(self.state.get("rooms", {}).get(room, {}).get("digest", ""))

    def contribution(self, room: str) -> RoomStatistics:
        """A room's latest contribution (read once per ledger)."""
        if room not in self._loaded:
            data = (self.directory / "rooms" / f"{check_room_name(room)}.npz").read_bytes()
            statistics = RoomStatistics.from_bytes(data)
            statistics.room = room
            self._loaded[room] = statistics
        return self._loaded[room]

    def record(self, statistics: RoomStatistics, round_number: int, node: int | None = None) -> None:
        """Keeps ``statistics`` as its room's latest contribution (checked against the district's
        widths and the room's node first; the index is written last)."""
        room = check_room_name(statistics.room)
        if node is not None:
            self.check_node(room, node)
        self.check_widths(statistics)
        write_atomic(self.directory / "rooms" / f"{room}.npz", statistics.to_bytes())
        self._loaded[room] = statistics
        widths = self.state.setdefault("widths", {})
        widths.update({p: s.width for p, s in statistics.paths.items() if p not in widths})
        self.state.setdefault("rooms", {})[room] = {"digest": statistics.digest(), "classes": statistics.classes,
                                                     "round": round_number, "node": node}
        self._save()

    def bind(self, room: str, node: int) -> None:
        """Binds an unchanged room's name to its node (a ledger written before names were bound)."""
        self.check_node(room, node)
        entry = self.state.get("rooms", {}).get(room)
        if entry is not None and entry.get("node") is None:
            entry["node"] = node
            self._save()

    def forget(self, room: str) -> None:
        """Takes a room out of the district: its contribution and its name's binding."""
        (self.directory / "rooms" / f"{check_room_name(room)}.npz").unlink(missing_ok=True)
        self.state.get("rooms", {}).pop(room, None)
        self._loaded.pop(room, None)
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
        write_atomic(self.directory / "district.json", json.dumps(self.state, indent=2, sort_keys=True).encode())


__all__ = ["Ledger", "check_room_name"]
