"""Turn a LearnNewClasses stream into a validated :class:`~service.jobs.Upload`, or refuse it.

The stream is a header, then examples, each in one message or as consecutive chunks of its
serialized bytes (so no message needs to exceed the default 4 MiB limit). Everything is checked
before a job exists: the header, class names (non-empty, unique; that they are new is checked by
:meth:`service.jobs.JobRunner.submit`, after a retry of an earlier upload is recognised), labels, decodable samples,
the minimum number of examples per class, and the held-out split. Any problem raises
:class:`~service.errors.InvalidRequest` naming it; nothing is stored.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from service.codec import DecodeLimits, decode_labeled
from service.errors import InvalidRequest, ResourceExhausted
from service.jobs import Upload

if TYPE_CHECKING:
    from model.samples import LabeledSample
    from service._proto import mcil_pb2

MAX_NAME_LENGTH = 128


@dataclass(frozen=True)
class UploadRules:
    """The limits and learning settings an upload is checked against."""

    min_examples_per_class: int
    held_out_fraction: float
    held_out_per_class: int
    max_classes_per_task: int
    max_upload_bytes: int
    max_upload_examples: int
    decode: DecodeLimits


def _check_request_id(value: str) -> str:
    if not value or len(value) > 128 or not value.isprintable():
        raise InvalidRequest("header.request_id", "must be 1..128 printable characters")
    return value


def check_class_names(names: Sequence[str], max_classes: int) -> tuple[str, ...]:
    """The header's class names, or InvalidRequest naming what is wrong with them. (Whether they are
    new is checked when the job is submitted, after a retried request_id is recognised.)"""
    if not names:
        raise InvalidRequest("header.class_names", "give at least one new class name")
    if len(names) > max_classes:
        raise InvalidRequest("header.class_names", f"at most {max_classes} classes per upload, got {len(names)}")
    out = []
    for i, name in enumerate(names):
        stripped = name.strip()
        if not stripped:
            raise InvalidRequest(f"header.class_names[{i}]", "empty class name")
        if len(stripped) > MAX_NAME_LENGTH or not stripped.isprintable():
            raise InvalidRequest(f"header.class_names[{i}]", f"must be at most {MAX_NAME_LENGTH} printable characters")
        out.append(stripped)
    folded = [n.casefold() for n in out]
    duplicates = sorted({n for n in out if folded.count(n.casefold()) > 1})
    if duplicates:
        raise InvalidRequest("header.class_names", f"duplicate class name(s) {duplicates} (names ignore case)")
    return tuple(out)


def receive_upload(
    requests: Iterable["mcil_pb2.LearnNewClassesRequest"],
    rules: UploadRules,
    on_bytes: Callable[[int], None] | None = None,
) -> Upload:
    """Read the whole stream and validate it (see the module docstring)."""
    from service._proto import mcil_pb2

    digest = hashlib.sha256()
    header: mcil_pb2.LearnHeader | None = None
    examples: list[tuple[int, mcil_pb2.LabeledExample]] = []
    pending = bytearray()
    total = 0
    index = 0
    for message_number, message in enumerate(requests):
        size = message.ByteSize()
        total += size
        if on_bytes is not None:
            on_bytes(size)
        if total > rules.max_upload_bytes:
            raise ResourceExhausted(f"upload exceeds the limit of {rules.max_upload_bytes} bytes")
        part = message.WhichOneof("part")
        if message_number == 0:
            if part != "header":
                raise InvalidRequest("header", "the first message must be the header")
            header = message.header
            digest.update(header.SerializeToString(deterministic=True))
            continue
        if part == "header":
            raise InvalidRequest("header", "only the first message may be a header")
        if part == "example":
            if pending:
                raise InvalidRequest(f"examples[{index}]", "a chunked example was not finished (last=false)")
            examples.append((index, message.example))
            digest.update(message.example.SerializeToString(deterministic=True))
            index += 1
        elif part == "chunk":
            pending.extend(message.chunk.data)
            if message.chunk.last:
                example = mcil_pb2.LabeledExample()
                try:
                    example.ParseFromString(bytes(pending))
                except Exception:  # noqa: BLE001 - protobuf raises DecodeError
                    raise InvalidRequest(f"examples[{index}]", "chunks do not form a valid LabeledExample") from None
                examples.append((index, example))
                digest.update(example.SerializeToString(deterministic=True))
                pending.clear()
                index += 1
        else:
            raise InvalidRequest(f"messages[{message_number}]", "empty message (no header, example or chunk)")
        if len(examples) > rules.max_upload_examples:
            raise ResourceExhausted(f"upload exceeds the limit of {rules.max_upload_examples} examples")
    if header is None:
        raise InvalidRequest("header", "the upload is empty (no header)")
    if pending:
        raise InvalidRequest(f"examples[{index}]", "the upload ended inside a chunked example (no last=true)")
    request_id = _check_request_id(header.request_id)
    names = check_class_names(list(header.class_names), rules.max_classes_per_task)
    fraction = float(header.held_out_fraction) or rules.held_out_fraction
    if not 0.0 < fraction < 1.0:
        raise InvalidRequest("header.held_out_fraction", f"must be in (0, 1), got {fraction}")

    train: dict[str, list[LabeledSample]] = {n: [] for n in names}
    held: dict[str, list[LabeledSample]] = {n: [] for n in names}
    for i, example in examples:
        label = example.label.strip()
        if label not in train:
            raise InvalidRequest(f"examples[{i}].label", f"{example.label!r} is not one of the classes {list(names)}")
        if not example.HasField("sample"):
            raise InvalidRequest(f"examples[{i}].sample", "missing")
        sample = decode_labeled(f"examples[{i}].sample", label, example.sample, rules.decode)
        (held if example.held_out else train)[label].append(sample)

    for name in names:
        count = len(train[name]) + len(held[name])
        if count == 0:
            raise InvalidRequest("examples", f"class {name!r} has no examples")
        if count < rules.min_examples_per_class:
            raise InvalidRequest(
                "examples", f"class {name!r} has {count} examples; at least {rules.min_examples_per_class} are needed"
            )
    client_split = any(held[n] for n in names)
    rng = random.Random(request_id)
    for name in names:
        if client_split:
            if not held[name]:
                raise InvalidRequest("examples", f"class {name!r} has no held-out example (others do)")
            if not train[name]:
                raise InvalidRequest("examples", f"class {name!r} has only held-out examples")
        else:
            pool = train[name]
            order = list(range(len(pool)))
            rng.shuffle(order)
            n_held = min(len(pool) - 1, max(1, round(fraction * len(pool))))
            held[name] = [pool[j] for j in order[:n_held]]
            train[name] = [pool[j] for j in order[n_held:]]
        held[name] = held[name][: rules.held_out_per_class]  # retention cap (docs/service.md)
    return Upload(
        request_id=request_id,
        digest=digest.hexdigest(),
        class_names=names,
        train=[s for n in names for s in train[n]],
        held_out=[s for n in names for s in held[n]],
    )
