"""A room's side of a district (docs/district.md): its own statistics out, the district's merge in.

    statistics    the sums of the examples taught in this room (``StatisticsHead.own_statistics``),
                  restricted to the classes it taught, as a ``district.statistics.RoomStatistics``
    install       the sum of the *other* rooms' latest contributions, received through the daemon's
                  API; a job like learning: the head is solved from this room's own sums plus the
                  received ones, checked by the commit gate on this room's held-out examples, and
                  committed as a version (or ends ``succeeded`` without one when nothing changed)

A room's own sums are kept apart from what it received, so every round adds each room's examples
exactly once however often it runs. Sums only add up over identical features: the *district
identity* (:func:`district_identity`) digests the frozen encoders (``export.base.base_digest``), the
strategy and the head's configuration, and a contribution of another identity is refused by name.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from district.ledger import check_room_name
from district.statistics import PathSums, RoomStatistics, StatisticsError, upper_triangle
from service.errors import FailedPrecondition, InvalidRequest

if TYPE_CHECKING:
    from model.learner import Learner

MAX_ROOMS = 10_000
BASE_DIGEST = "_district_base_digest"
"""The attribute of a backbone that keeps its frozen encoders' digest once computed."""
_digest_lock = threading.Lock()


@dataclass(frozen=True)
class DistrictInstall:
    """What a district round asks a room to install: the others' sums, and where they came from."""

    round: int
    rooms: tuple[str, ...]  # the other rooms whose contributions ``others`` sums
    others: RoomStatistics


def check_shareable(learner: "Learner") -> None:
    """Only a statistics head over the frozen features can share its sums exactly."""
    head = learner.head
    if head is None or learner.config.head.features != "frozen":
        raise FailedPrecondition(
            f"the {learner.strategy_name!r} strategy does not keep class statistics over the frozen features "
            "(a district needs a statistics head with head.features = frozen: the default `mcil`, `ranpac`, "
            "`simplecil`)")


def district_identity(learner: "Learner") -> str:
    """sha256 of the frozen encoders, the strategy and the head's configuration: two rooms' sums add
    up exactly when this is equal. The encoders' digest is kept on the backbone (hashing them takes a
    moment): a clone's backbone shares the same frozen weights, and copies the digest with them."""
    from export.base import base_digest

    check_shareable(learner)
    assert learner.head is not None
    backbone = learner.backbone
    with _digest_lock:
        base = getattr(backbone, BASE_DIGEST, None)
        if not isinstance(base, str):
            base = base_digest(backbone)
            setattr(backbone, BASE_DIGEST, base)
    head = learner.head
    settings = {"base": base, "strategy": learner.strategy_name, "kind": head.kind,
                "config": asdict(head.config), "input_dims": head.input_dims,
                "expansion": head.metadata()["expansion_digest"]}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def check_identity(learner: "Learner", identity: str) -> None:
    """Refuses sums taken over another district identity, by name."""
    mine = district_identity(learner)
    if identity != mine:
        raise InvalidRequest("statistics.identity",
                             f"the district's sums were taken over identity {identity[:12]}, this room's is "
                             f"{mine[:12]}: rooms of a district must share one base, strategy and head "
                             "configuration (docs/district.md)")


def room_statistics(learner: "Learner") -> RoomStatistics:
    """This room's own sums over the classes it taught (module docstring)."""
    identity = district_identity(learner)
    assert learner.head is not None
    own = learner.head.own_statistics()
    classes = learner.classes
    taught = np.zeros(len(classes), dtype=bool)
    for s in own.values():
        counts = s.counts.numpy()
        taught[:len(counts)] |= counts > 0
    rows = np.flatnonzero(taught)
    paths = {}
    for p, s in own.items():
        counts = np.zeros(len(classes), np.int64)
        counts[:s.classes] = s.counts.numpy()
        targets = np.zeros((s.gram.shape[0], len(classes)))
        targets[:, :s.classes] = s.targets.numpy()
        thresholds = np.full(len(classes), -np.inf, np.float32)
        known = learner.head.own_unknown_thresholds()[p].numpy()  # never what it received
        thresholds[:len(known)] = known
        paths[p] = PathSums(upper_triangle(s.gram.numpy()), targets[:, rows], counts[rows], thresholds[rows])
    return RoomStatistics("", identity, [classes[i] for i in rows], paths)


def received_learner(learner: "Learner", install: DistrictInstall) -> "Learner":
    """A clone of ``learner`` that holds its own sums plus ``install.others`` (the learner is untouched)."""
    import torch

    from model.class_sums import PathStatistics

    others = install.others
    check_identity(learner, others.identity)
    out = learner.clone()
    assert out.head is not None
    rows = {c.casefold(): i for i, c in enumerate(out.classes)}
    new = [c for c in others.classes if c.casefold() not in rows]
    names = out.classes + new
    rows.update({c.casefold(): len(out.classes) + i for i, c in enumerate(new)})
    index = torch.tensor([rows[c.casefold()] for c in others.classes], dtype=torch.int64)
    received: dict[str, PathStatistics] = {}
    thresholds: dict[str, torch.Tensor] = {}
    for p in out.head.input_dims:
        mine = torch.full((len(names),), float("-inf"))
        known = out.head.own_unknown_thresholds()[p]  # its own, then the lowest of what others computed
        mine[:len(known)] = known
        s = others.paths.get(p)
        width = out.head.width(p)
        stats = PathStatistics(width, len(names))
        if s is not None:
            if s.width != width:
                raise InvalidRequest(f"statistics.paths.{p}", f"width {s.width}, this room's head is {width} wide")
            stats.gram = torch.from_numpy(s.gram())
            stats.targets[:, index] = torch.from_numpy(s.targets)
            stats.counts[index] = torch.from_numpy(s.counts)
            theirs = torch.from_numpy(s.thresholds.astype(np.float32))
            seen = torch.from_numpy(s.counts > 0)
            current = mine[index]
            lower = torch.where(torch.isneginf(current), theirs, torch.minimum(current, theirs))
            mine[index] = torch.where(seen, lower, current)
        received[p] = stats
        thresholds[p] = mine
    out.receive_classes(new, received, thresholds)
    return out


def same_head(a: "Learner", b: "Learner") -> bool:
    """Whether two learners answer alike: the same classes, and bit-identical head weights and thresholds."""
    import torch

    if a.classes != b.classes or a.head is None or b.head is None or set(a.head.weights) != set(b.head.weights):
        return False
    return all(torch.equal(a.head.weights[p], b.head.weights[p]) for p in a.head.weights) and all(
        torch.equal(a.head.thresholds[p], b.head.thresholds[p]) for p in a.head.thresholds)


def own_task_figures(before: Mapping[str, Sequence[Sequence[float]]], now: Mapping[str, Sequence[float]]
                     ) -> dict[str, dict[str, float]]:
    """Per path: this room's tasks' mean accuracy now (``last_accuracy``) and ``forgetting``, the mean
    over its tasks of the best accuracy any earlier version had on it minus the accuracy now (>= 0)."""
    out = {}
    for p, accuracies in now.items():
        rows = before.get(p, [])
        drops = []
        for j, a in enumerate(accuracies):
            earlier = [r[j] for r in rows if len(r) > j]
            drops.append(max(0.0, max(earlier) - a) if earlier else 0.0)
        out[p] = {"last_accuracy": float(np.mean(accuracies)) if accuracies else 0.0,
                  "forgetting": float(np.mean(drops)) if drops else 0.0}
    return out


def parse_install(header: Mapping[str, Any], data: bytes) -> DistrictInstall:
    """A :class:`DistrictInstall` from an install request's header fields and statistics bytes."""
    try:
        others = RoomStatistics.from_bytes(data)
    except StatisticsError as exc:
        raise InvalidRequest(f"statistics.{exc.field}", exc.problem) from None
    rooms = tuple(str(r) for r in header.get("rooms", ()))
    try:
        if len(rooms) > MAX_ROOMS:
            raise StatisticsError("rooms", f"{len(rooms)} rooms, at most {MAX_ROOMS}")
        for room in rooms:
            check_room_name(room)  # as the district's ledger names them
    except StatisticsError as exc:
        raise InvalidRequest("header.rooms", exc.problem) from None
    round_number = int(header.get("round", 0))
    if round_number < 1:
        raise InvalidRequest("header.round", f"must be >= 1, got {round_number}")
    return DistrictInstall(round_number, rooms, others)


__all__ = ["DistrictInstall", "check_identity", "check_shareable", "district_identity", "own_task_figures", "parse_install",
           "received_learner", "room_statistics", "same_head"]
