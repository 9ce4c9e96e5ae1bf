"""One room as the district sees it: the room's daemon, reached over gRPC with its token.

A room's Flower ClientApp (``district/client_app.py``) runs next to the room's daemon and calls
:func:`share` and :func:`install` for the district's ServerApp. The daemon's address, the file its
admin token is read from and the CA that signed its certificate come from the SuperNode's node
config (``--node-config "room='room-12' daemon='127.0.0.1:50051' token-file='/etc/mcil/token'"``):

    room            the room's name in the district (letters, digits, '.', '_', '-')
    daemon          host:port of the room's daemon
    token-file      optional: the daemon's admin token (the district rpcs need it when one is set)
    daemon-ca       optional: PEM of the CA that signed the daemon's certificate (TLS to the daemon)
    install-timeout optional: seconds to wait for the room's merge job (default 600)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from district.ledger import check_room_name
from district.statistics import StatisticsError


@dataclass(frozen=True)
class RoomLink:
    """How to reach one room's daemon (module docstring)."""

    room: str
    daemon: str
    token_file: Path | None = None
    daemon_ca: Path | None = None
    install_timeout: float = 600.0

    @classmethod
    def from_node_config(cls, config: Mapping[str, Any]) -> "RoomLink":
        room = str(config.get("room", ""))
        daemon = str(config.get("daemon", ""))
        if not daemon or ":" not in daemon:
            raise StatisticsError("node_config.daemon", f"host:port of the room's daemon, got {daemon!r}")
        try:
            check_room_name(room)
        except StatisticsError as exc:
            raise StatisticsError("node_config.room", exc.problem) from None
        token = str(config.get("token-file", "")) or None
        ca = str(config.get("daemon-ca", "")) or None
        timeout = float(config.get("install-timeout", 600.0))
        return cls(room, daemon, Path(token) if token else None, Path(ca) if ca else None, timeout)

    def client(self) -> Any:
        from service.client import Client, TLSOptions

        token = self.token_file.read_text().strip() if self.token_file else None
        tls = TLSOptions.from_files(self.daemon_ca) if self.daemon_ca else None
        return Client(self.daemon, token=token, tls=tls, timeout=max(60.0, self.install_timeout))


def share(link: RoomLink, known_digest: str) -> tuple[dict[str, Any], bytes]:
    """The room's own statistics: ``(header, statistics file)``; the file is empty when the district
    already holds them (``known_digest``)."""
    started = time.monotonic()
    with link.client() as client:
        header, data = client.room_statistics(known_digest=known_digest)
    return ({"room": link.room, "identity": header.identity, "digest": header.digest,
             "unchanged": bool(header.unchanged), "classes": list(header.class_names),
             "seconds": round(time.monotonic() - started, 3)}, data)


def install(link: RoomLink, round_number: int, rooms: list[str], digest: str, identity: str,
            data: bytes) -> dict[str, Any]:
    """Installs a round's merge (the other rooms' sums) and waits for its job: what it ended as."""
    from service._proto import mcil_pb2

    header = mcil_pb2.StatisticsHeader(identity=identity, digest=digest, round=round_number, rooms=rooms,
                                       size_bytes=len(data))
    started = time.monotonic()
    with link.client() as client:
        reply = client.install_district_merge(header, data)
        job = client.wait(reply.job_id, timeout=link.install_timeout)
    return {"room": link.room, "job_id": job.job_id, "state": mcil_pb2.JobState.Name(job.state),
            "version": int(job.committed_version), "classes_gained": list(job.class_names),
            "message": job.message, "seconds": round(time.monotonic() - started, 3),
            "job_seconds": round(job.finished_at - job.started_at, 3) if job.finished_at else None}


__all__ = ["RoomLink", "install", "share"]
