"""``serving/head.py``: a version's head as arrays answers as the learner's head does, from NumPy alone.

Heads of real learners (the tiny preset) over synthetic tasks: ``mcil`` (ridge on the features),
``ranpac`` (a random expansion first) and ``simplecil`` (class means); the arrays written and read back;
damaged files refused by name; and the package imports no PyTorch.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from export.head_version import check_head, served_head
from model.head_inputs import head_scores
from model.heads import HeadConfig
from model.learner import Learner
from model.samples import Sample
from model.synthetic import make_dataset
from serving.errors import HeadDataError
from serving.head import ARRAYS_FILE, ServedHead
from serving.head_graph import DeviceScores
from serving.sessions import CPU
from tests.conftest import FAST


def _taught(make_learner: Callable[..., Learner], strategy: str) -> Learner:
    # ranpac's expansion at 256 wide, not 2,000: the same arithmetic, in a fraction of the time
    learner = make_learner(strategy, config=replace(FAST, head=HeadConfig(expansion=256))) if strategy == "ranpac" \
        else make_learner(strategy)
    learner.learn_task(make_dataset(["red", "green"], 8, seed=1), ["red", "green"])
    learner.learn_task(make_dataset(["blue"], 8, seed=3, first_index=2), ["blue"])
    return learner


def _mixed() -> list[Sample]:
    data = make_dataset(["red", "green", "blue"], 3, seed=9)
    return ([Sample(image=s.image, audio=s.audio, sample_rate=s.sample_rate) for s in data[:5]]
            + [Sample(image=s.image) for s in data[5:7]] + [Sample(audio=s.audio, sample_rate=16000) for s in data[7:]])


@pytest.mark.parametrize("strategy", ["mcil", "ranpac", "simplecil"])
def test_the_served_head_judges_as_the_learners_head(make_learner: Callable[..., Learner], strategy: str) -> None:
    learner = _taught(make_learner, strategy)
    served = served_head(learner)
    assert check_head(learner, served) <= 1e-6
    batch = learner.encode_inputs(_mixed())
    want_scores, want_paths, want_unknown = head_scores(learner, learner.head, batch,  # type: ignore[arg-type]
                                                        learner.fused_features(batch))
    rows = batch.has_image.nonzero().flatten()  # the features head_inputs computes (one chunk: < 16 samples)
    image = np.full((len(batch), learner.backbone.image.output_dim), np.nan, np.float32)
    image[rows.numpy()] = learner.backbone.image.frozen_features(batch.images[rows]).detach().numpy()
    audio = batch.audio.numpy().copy()
    audio[~batch.has_audio.numpy()] = np.nan
    scores, paths, unknown = served.judge({"visual": image, "audio": audio})
    assert np.abs(scores - want_scores.numpy()).max() <= 1e-6 * max(1.0, float(np.abs(scores).max()))
    assert paths.tolist() == want_paths.tolist() and unknown.tolist() == want_unknown.tolist()
    assert {a.path for a in served.answer({"visual": image, "audio": audio})} == {"av", "visual", "audio"}
    # the same head scoring through its ONNX graph (how a GPU serves it; here on the CPU provider)
    on_graph = replace(served, scorer=DeviceScores(served, CPU))
    assert check_head(learner, on_graph) <= 1e-6
    graph_scores, graph_paths, graph_unknown = on_graph.judge({"visual": image, "audio": audio})
    assert np.abs(graph_scores - scores).max() <= 1e-6 * max(1.0, float(np.abs(scores).max()))
    assert graph_paths.tolist() == paths.tolist() and graph_unknown.tolist() == unknown.tolist()


def test_the_arrays_round_trip_and_a_damaged_file_is_refused_by_name(
        make_learner: Callable[..., Learner], tmp_path: Path) -> None:
    learner = _taught(make_learner, "ranpac")
    served = served_head(learner)
    served.write(tmp_path)
    again = ServedHead.load(tmp_path)
    assert again.classes == served.classes and again.mix == served.mix
    assert all(np.array_equal(again.weights[p], served.weights[p]) for p in served.weights)
    data = bytearray((tmp_path / ARRAYS_FILE).read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / ARRAYS_FILE).write_bytes(bytes(data))
    with pytest.raises(HeadDataError) as caught:
        ServedHead.load(tmp_path)
    assert caught.value.field == ARRAYS_FILE and "checksum" in caught.value.problem


def test_inconsistent_arrays_are_refused_by_the_field_at_fault(make_learner: Callable[..., Learner]) -> None:
    served = served_head(_taught(make_learner, "mcil"))
    weights = dict(served.weights, av=served.weights["av"][:, :2])
    with pytest.raises(HeadDataError) as caught:
        ServedHead(served.kind, served.classes, served.input_dims, served.expansions, weights, served.thresholds,
                   served.mix)
    assert caught.value.field == "weights.av"
    with pytest.raises(HeadDataError, match="neither an image nor a sound"):
        served.judge({"visual": np.full((1, served.input_dims["visual"]), np.nan, np.float32)})


def test_the_serving_package_imports_no_pytorch() -> None:
    code = ("import sys, serving.head, serving.base, serving.sessions, serving.inputs, serving.speech, "
            "serving.sounds, serving.features; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
