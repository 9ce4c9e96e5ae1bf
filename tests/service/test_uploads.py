"""LearnNewClasses stream validation, without a server: header, names, labels, counts, chunks, split."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

from service._proto import mcil_pb2
from service.client import learn_requests, sample_from_arrays
from service.codec import DecodeLimits
from service.errors import InvalidRequest, ResourceExhausted
from service.uploads import UploadRules, receive_upload

RULES = UploadRules(min_examples_per_class=4, held_out_fraction=0.25, held_out_per_class=100,
                    max_classes_per_task=10, max_upload_bytes=64 * 1024 * 1024, max_upload_examples=1000,
                    decode=DecodeLimits())


def _example(label: str, i: int, held_out: bool = False, size: int = 8) -> mcil_pb2.LabeledExample:
    image = np.full((size, size, 3), i % 255, dtype=np.uint8)
    return mcil_pb2.LabeledExample(label=label, held_out=held_out, sample=sample_from_arrays(image))


def _stream(names: Sequence[str], exs: Sequence[mcil_pb2.LabeledExample], request_id: str = "r1",
            chunk_bytes: int = 1 << 20) -> list[mcil_pb2.LearnNewClassesRequest]:
    header = mcil_pb2.LearnHeader(request_id=request_id, class_names=list(names))
    return list(learn_requests(header, exs, chunk_bytes))


def _good(n: int = 4) -> list[mcil_pb2.LabeledExample]:
    return [_example(c, i) for c in ("a", "b") for i in range(n)]


def test_valid_upload_is_split_per_class() -> None:
    upload = receive_upload(_stream(["a", "b"], _good(8)), RULES)
    assert upload.class_names == ("a", "b")
    assert len(upload.held_out) == 4 and len(upload.train) == 12  # 25 % of 8 per class
    assert sorted(s.label for s in upload.held_out) == ["a", "a", "b", "b"]
    again = receive_upload(_stream(["a", "b"], _good(8)), RULES)
    assert again.digest == upload.digest  # a retry is recognisable
    other = receive_upload(_stream(["a", "b"], _good(9)), RULES)
    assert other.digest != upload.digest


def test_client_held_out_examples_are_used_as_given() -> None:
    exs = _good(4) + [_example("a", 9, held_out=True), _example("b", 9, held_out=True)]
    upload = receive_upload(_stream(["a", "b"], exs), RULES)
    assert len(upload.held_out) == 2 and len(upload.train) == 8


def test_chunked_examples_are_reassembled() -> None:
    exs = [_example(c, i, size=64) for c in ("a", "b") for i in range(4)]  # ~12 KiB each
    stream = _stream(["a", "b"], exs, chunk_bytes=1000)
    assert sum(1 for m in stream if m.WhichOneof("part") == "chunk") > 8 * 10
    upload = receive_upload(stream, RULES)
    assert len(upload.train) + len(upload.held_out) == 8
    assert all(s.image is not None and s.image.shape == (64, 64, 3) for s in upload.train)


@pytest.mark.parametrize(
    ("names", "exs", "message"),
    [
        (["a", " "], None, "empty class name"),
        (["a", "a"], None, "duplicate"),
        ([], None, "at least one new class"),
        (["a", "b"], [_example(c, i) for c in ("a", "b") for i in range(3)], "at least 4 are needed"),
        (["a", "b", "c"], None, "'c' has no examples"),
        (["a", "b"], _good() + [_example("z", 0)], "'z' is not one of the classes"),
        (["a", "b"], _good() + [_example("a", 9, held_out=True)], "'b' has no held-out example"),
    ],
)
def test_bad_uploads_are_refused(names: list[str], exs: list[mcil_pb2.LabeledExample] | None,
                                 message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        receive_upload(_stream(names, exs if exs is not None else _good()), RULES)


def test_malformed_streams_are_refused() -> None:
    good = _stream(["a", "b"], _good())
    with pytest.raises(InvalidRequest, match="first message must be the header"):
        receive_upload(good[1:], RULES)
    with pytest.raises(InvalidRequest, match="only the first message"):
        receive_upload(good + good[:1], RULES)
    with pytest.raises(InvalidRequest, match="empty"):
        receive_upload([], RULES)
    truncated = [m for m in _stream(["a", "b"], _good(), chunk_bytes=50) if not m.chunk.last]
    with pytest.raises(InvalidRequest, match="chunk"):
        receive_upload(truncated, RULES)
    bad_id = _stream(["a", "b"], _good(), request_id="")
    with pytest.raises(InvalidRequest, match="request_id"):
        receive_upload(bad_id, RULES)


def test_size_limits() -> None:
    from dataclasses import replace

    with pytest.raises(ResourceExhausted):
        receive_upload(_stream(["a", "b"], _good()), replace(RULES, max_upload_bytes=1024))
    with pytest.raises(ResourceExhausted):
        receive_upload(_stream(["a", "b"], _good()), replace(RULES, max_upload_examples=5))
