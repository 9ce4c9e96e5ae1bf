"""One district round, as the district's Flower ServerApp runs it (docs/district.md).

    1 share     ask every connected room for its own statistics, telling each the digest the
                district already holds for it (a room whose sums did not change answers "unchanged"
                and sends no bytes); keep each new contribution (district/ledger.py)
    2 refuse    a room whose identity (base, strategy, head configuration) is not the district's is
                named and left out: its sums never enter a merge, and it is sent nothing
    3 install   send every room that answered the sum of the *other* rooms' latest contributions,
                added in room-name order (float64); the room's daemon adds its own sums, solves,
                checks the commit gate and commits (or refuses) a version

A room that does not answer within ``timeout`` is named in the result; the others still install
the merge, and the silent room counts with its latest earlier contribution (if any): the merge of a
round is always solved from the latest contribution of every room the district has heard from.
The result (rooms, classes each contributed, bytes each way, times, each install's outcome) is
written as JSON to ``result-path``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

import numpy as np

from district.ledger import Ledger
from district.statistics import RoomStatistics, StatisticsError
from service.store import write_atomic

POLL_SECONDS = 0.25
"""How often a phase looks for the rooms' answers (Flower's own ``send_and_receive`` waits 3 s)."""


class Grid(Protocol):
    """What a round needs of Flower's ``flwr.serverapp.Grid``."""

    def get_node_ids(self) -> Iterable[int]: ...

    def push_messages(self, messages: Iterable[Any]) -> Iterable[str]: ...

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Any]: ...


def exchange(grid: Grid, messages: list[Any], timeout: float) -> tuple[list[Any], dict[str, int]]:
    """Sends ``messages`` and collects the answers that come within ``timeout`` seconds; returns them
    and each sent message's id -> its destination node (an error answer comes from the SuperLink,
    and names the message it answers)."""
    if not messages:
        return [], {}
    nodes = [int(m.metadata.dst_node_id) for m in messages]
    ids = list(grid.push_messages(messages))  # None for a message the SuperLink did not take: no answer
    node_of = {i: n for i, n in zip(ids, nodes) if i}
    waiting, replies = set(node_of), []
    deadline = time.monotonic() + timeout
    while waiting:
        got = list(grid.pull_messages(list(waiting)))
        replies += got
        waiting -= {m.metadata.reply_to_message_id for m in got}
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    return replies, node_of


@dataclass(frozen=True)
class RoundConfig:
    """The run config of a round (``flwr run ... --run-config``; defaults in the app's pyproject.toml)."""

    identity: str  # the district identity every room must share (GetRoomStatistics' header.identity)
    state_dir: Path  # the ledger: every room's latest contribution
    result_path: Path
    rooms: int = 1  # wait until this many rooms are connected (or ``wait`` seconds have passed)
    wait: float = 30.0
    timeout: float = 120.0  # seconds each phase waits for the rooms' answers

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> "RoundConfig":
        identity = str(config.get("identity", ""))
        if len(identity) != 64:
            raise StatisticsError("run_config.identity", "the district identity (64 hex digits; "
                                  "`mcil district identity` prints a room's)")
        for key in ("state-dir", "result-path"):
            if not str(config.get(key, "")):
                raise StatisticsError(f"run_config.{key}", "a path is needed")
        return cls(identity, Path(str(config["state-dir"])), Path(str(config["result-path"])),
                   int(config.get("rooms", 1)), float(config.get("wait", 30.0)), float(config.get("timeout", 120.0)))

    def run_config(self) -> dict[str, Any]:
        """The run config that :meth:`from_run_config` reads back (``flwr run --run-config``)."""
        return {"identity": self.identity, "state-dir": str(self.state_dir), "result-path": str(self.result_path),
                "rooms": self.rooms, "wait": float(self.wait), "timeout": float(self.timeout)}


def _message(node: int, config: Mapping[str, Any], data: bytes | None = None) -> Any:
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

    content = RecordDict({"config": ConfigRecord({k: json.dumps(v) for k, v in config.items()})})
    if data is not None:
        content["arrays"] = ArrayRecord({"statistics": Array(np.frombuffer(data, dtype=np.uint8).copy())})
    return Message(content=content, dst_node_id=node, message_type=MessageType.QUERY)


def _read(reply: Any) -> tuple[dict[str, Any], bytes]:
    if reply.has_error():
        return {"error": f"Flower error {reply.error.code}: {reply.error.reason}"}, b""
    config = {k: json.loads(str(v)) for k, v in reply.content["config"].items()}
    data = b""
    if "arrays" in reply.content:
        data = np.ascontiguousarray(reply.content["arrays"]["statistics"].numpy(), dtype=np.uint8).tobytes()
    return config, data


def _wait_for_rooms(grid: Grid, config: RoundConfig) -> list[int]:
    deadline = time.monotonic() + config.wait
    nodes = sorted(grid.get_node_ids())
    while len(nodes) < config.rooms and time.monotonic() < deadline:
        time.sleep(0.5)
        nodes = sorted(grid.get_node_ids())
    return nodes


def run_round(grid: Grid, config: RoundConfig) -> dict[str, Any]:
    """One round (module docstring); returns what it writes to ``config.result_path``."""
    started = time.monotonic()
    ledger = Ledger(config.state_dir)
    ledger.lock()
    try:
        return _run_round(grid, config, ledger, started)
    finally:
        ledger.unlock()


def _run_round(grid: Grid, config: RoundConfig, ledger: Ledger, started: float) -> dict[str, Any]:
    number = ledger.start_round(config.identity)
    nodes = _wait_for_rooms(grid, config)
    rooms: dict[str, dict[str, Any]] = {}
    refused: dict[str, str] = {}
    errors: dict[str, str] = {}
    by_node: dict[int, str] = {}

    ask = {"phase": "share", "round": number, "known": {r: ledger.digest(r) for r in ledger.rooms}}
    shared_at = time.monotonic()
    replies, node_of = exchange(grid, [_message(n, ask) for n in nodes], config.timeout)
    for reply in replies:
        header, data = _read(reply)
        node = node_of.get(reply.metadata.reply_to_message_id, int(reply.metadata.src_node_id))
        room = str(header.get("room", "")) or f"node-{node}"
        if "error" in header:
            errors[room] = str(header["error"])
            continue
        if header.get("identity") != config.identity:
            refused[room] = (f"identity {str(header.get('identity'))[:12]} is not the district's "
                             f"{config.identity[:12]}: another base, strategy or head configuration")
            continue
        if room in rooms:
            errors[room] = "two SuperNodes answered as this room; the second was ignored"
            continue
        try:
            if header.get("unchanged"):
                ledger.bind(room, node)
            else:
                statistics = RoomStatistics.from_bytes(data)
                statistics.room = room
                if statistics.digest() != header.get("digest") or statistics.identity != config.identity:
                    raise StatisticsError("statistics", "they do not match their header (digest or identity)")
                ledger.record(statistics, number, node)
        except (StatisticsError, OSError) as exc:  # this room's answer is left out; the round goes on
            errors[room] = str(exc)
            continue
        by_node[node] = room
        rooms[room] = {"classes": list(header.get("classes", [])), "unchanged": bool(header.get("unchanged")),
                       "bytes_sent": len(data), "share_seconds": header.get("seconds")}
    share_seconds = time.monotonic() - shared_at

    messages, installing = [], {}  # room of each install message's destination node
    for node, room in sorted(by_node.items(), key=lambda item: item[1]):
        try:
            others, merged = ledger.others(room)
        except (StatisticsError, OSError) as exc:
            rooms[room]["install"] = {"state": "SKIPPED", "message": f"cannot sum the others' statistics: {exc}"}
            continue
        if merged is None:
            rooms[room]["install"] = {"state": "SKIPPED", "message": "no other room has contributed yet"}
            continue
        data = merged.to_bytes()
        rooms[room]["bytes_received"] = len(data)
        rooms[room]["merged_rooms"] = others
        messages.append(_message(node, {"phase": "install", "round": number, "rooms": others,
                                        "digest": merged.digest(), "identity": merged.identity}, data))
        installing[node] = room
    installed_at = time.monotonic()
    replies, node_of = exchange(grid, messages, config.timeout)
    for reply in replies:
        outcome, _ = _read(reply)
        room = installing.get(node_of.get(reply.metadata.reply_to_message_id, -1), "")
        if room in rooms:
            rooms[room]["install"] = outcome
    for entry in rooms.values():
        entry.setdefault("install", {"state": "NO_ANSWER", "message": f"no answer within {config.timeout:g} s"})

    silent = [r for r in ledger.rooms if r not in rooms and r not in refused and r not in errors]
    result = {
        "round": number, "identity": config.identity, "rooms": rooms, "refused": refused, "errors": errors,
        "silent": silent, "nodes": len(nodes), "nodes_without_answer": len(nodes) - len(by_node) - len(refused)
        - len(errors), "share_seconds": round(share_seconds, 3),
        "install_seconds": round(time.monotonic() - installed_at, 3),
        "seconds": round(time.monotonic() - started, 3),
        "contributors": ledger.rooms,
    }
    config.result_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(config.result_path, json.dumps(result, indent=2, sort_keys=True).encode())
    return result


__all__ = ["Grid", "RoundConfig", "run_round"]
