"""The room's Flower ClientApp: answers the district's two questions with the room's daemon.

    phase "share"    reply with the room's own statistics (or "unchanged" when the district's
                     digest for this room is still right): district/room.py ``share``
    phase "install"  install the round's merge (the other rooms' sums) as a job on the room's daemon
                     and reply with how it ended: district/room.py ``install``

Anything that goes wrong is answered as ``error`` (with the field it concerns) rather than raised, so
the district names the room and what failed.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from district.room import RoomLink, install, share

app = ClientApp()


def _as_bytes(record: Any) -> bytes:
    return np.ascontiguousarray(record["statistics"].numpy(), dtype=np.uint8).tobytes()


def _reply(msg: Message, config: dict[str, Any], data: bytes | None = None) -> Message:
    content = RecordDict({"config": ConfigRecord({k: json.dumps(v) for k, v in config.items()})})
    if data is not None:
        content["arrays"] = ArrayRecord({"statistics": Array(np.frombuffer(data, dtype=np.uint8).copy())})
    return Message(content=content, reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """See the module docstring."""
    try:
        link = RoomLink.from_node_config(context.node_config)
        config = {k: json.loads(str(v)) for k, v in msg.content["config"].items()}
        phase = config.get("phase")
        if phase == "share":
            known = config.get("known", {})
            header, data = share(link, str(known.get(link.room, "")) if isinstance(known, dict) else "")
            return _reply(msg, header, data if data else None)
        if phase == "install":
            outcome = install(link, int(config["round"]), list(config["rooms"]), str(config["digest"]),
                              str(config["identity"]), _as_bytes(msg.content["arrays"]))
            return _reply(msg, outcome)
        return _reply(msg, {"room": link.room, "error": f"phase: unknown phase {phase!r}"})
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the district, named
        details = exc.details() if hasattr(exc, "details") else str(exc)
        room = str(context.node_config.get("room", ""))
        return _reply(msg, {"room": room, "error": f"{type(exc).__name__}: {details}"})
