"""The model's errors survive pickling, as they must to leave a worker process (the suite runs each
benchmark run in one) with their fields intact."""

from __future__ import annotations

import pickle

from model.errors import CheckpointError, InvalidInputError


def test_errors_pickle_with_their_fields() -> None:
    bad = pickle.loads(pickle.dumps(InvalidInputError("sample_rate", "must be > 0, got 0")))
    assert isinstance(bad, InvalidInputError) and (bad.field, bad.problem) == ("sample_rate", "must be > 0, got 0")
    assert str(bad) == "sample_rate: must be > 0, got 0"
    broken = pickle.loads(pickle.dumps(CheckpointError("weights.pt", "blocks.0.weight", "shape (3,) != (4,)")))
    assert (broken.source, broken.key, broken.problem) == ("weights.pt", "blocks.0.weight", "shape (3,) != (4,)")
    assert str(broken) == "weights.pt: blocks.0.weight: shape (3,) != (4,)"
