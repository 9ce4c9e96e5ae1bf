"""The district rpcs (``GetRoomStatistics``, ``InstallDistrictMerge``): statistics files in pieces.

A statistics file (``district.statistics.RoomStatistics.to_bytes``) of a ``lite`` room is tens of
megabytes, more than one gRPC message may carry, so both rpcs stream it: a ``StatisticsHeader``
first, then the bytes in pieces of at most ``PIECE_BYTES``.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Iterator

from service._proto import mcil_pb2
from service.district import check_identity, parse_install, room_statistics
from service.errors import InvalidRequest, ResourceExhausted
from service.job_records import Job, Upload

if TYPE_CHECKING:
    from service.daemon import Daemon

PIECE_BYTES = 1024 * 1024


def statistics_parts(daemon: "Daemon", request: mcil_pb2.RoomStatisticsRequest) -> Iterator[mcil_pb2.StatisticsPart]:
    """This room's own statistics: the header, then the file in pieces (or the header alone when the
    district already holds them: ``known_digest``)."""
    statistics = room_statistics(daemon.served.learner)
    digest = statistics.digest()
    header = mcil_pb2.StatisticsHeader(identity=statistics.identity, digest=digest, class_names=statistics.classes)
    if request.known_digest and request.known_digest == digest:
        header.unchanged = True
        yield mcil_pb2.StatisticsPart(header=header)
        return
    data = statistics.to_bytes()
    header.size_bytes = len(data)
    yield mcil_pb2.StatisticsPart(header=header)
    for start in range(0, len(data), PIECE_BYTES):
        yield mcil_pb2.StatisticsPart(data=data[start:start + PIECE_BYTES])


def receive_merge(daemon: "Daemon", parts: Iterator[mcil_pb2.StatisticsPart]) -> tuple[Job, bool]:
    """Reads an InstallDistrictMerge stream and submits its job (service/learning.py installs it)."""
    first = next(parts, None)
    if first is None or first.WhichOneof("part") != "header":
        raise InvalidRequest("header", "the first message must be the statistics header")
    header = first.header
    limit = daemon.config.limits.max_upload_bytes
    if header.size_bytes > limit:
        raise ResourceExhausted(f"statistics of {header.size_bytes} bytes exceed limits.max_upload_bytes ({limit})")
    data = bytearray()
    for part in parts:
        if part.WhichOneof("part") != "data":
            raise InvalidRequest("header", "only the first message may be a header")
        data += part.data
        if len(data) > header.size_bytes:
            raise InvalidRequest("data", f"more bytes than the header's size_bytes ({header.size_bytes})")
    if len(data) != header.size_bytes:
        raise InvalidRequest("data", f"{len(data)} bytes received, the header announced {header.size_bytes}")
    install = parse_install({"round": header.round, "rooms": list(header.rooms)}, bytes(data))
    check_identity(daemon.served.learner, install.others.identity)  # refused now, not in a failed job
    digest = install.others.digest()
    if header.digest and header.digest != digest:
        raise InvalidRequest("header.digest", "does not match the statistics received")
    known = {c.casefold() for c in daemon.served.classes}
    gained = tuple(c for c in install.others.classes if c.casefold() not in known)
    key = hashlib.sha256(f"{install.round}|{','.join(install.rooms)}|{digest}".encode()).hexdigest()[:32]
    upload = Upload(request_id=f"district-{install.round}-{key}", digest=digest, class_names=gained,
                    train=(), held_out=(), district=install)
    return daemon.submit(upload)


__all__ = ["PIECE_BYTES", "receive_merge", "statistics_parts"]
