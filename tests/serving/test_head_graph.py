"""``serving/head_graph.py``: a head's scores as an ONNX graph give what the NumPy head gives.

The graph runs here on ONNX Runtime's CPU provider, with the arrays bound as device values the way
a GPU placement binds them; on a machine with ONNX Runtime's CUDA provider the same head also runs
on the GPU (skipped elsewhere, with the reason).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from serving.head import PATHS, ServedHead, unit_features
from serving.head_graph import DeviceScores
from serving.sessions import CPU, PROVIDERS, Placement

DIMS = {"visual": 12, "audio": 8, "av": 20}
CLASSES = ("bell", "chalk", "door", "rain")


def make_head(kind: str, expanded: bool, without: str | None = None) -> ServedHead:
    rng = np.random.Generator(np.random.PCG64(3))
    expansions = {p: rng.standard_normal((d, 32)).astype(np.float32) if expanded else None for p, d in DIMS.items()}
    weights = {p: rng.standard_normal((32 if expanded else d, len(CLASSES))).astype(np.float32)
               for p, d in DIMS.items() if p != without}
    thresholds = {p: np.full(len(CLASSES), 0.05, dtype=np.float32) for p in PATHS}
    return ServedHead(kind=kind, classes=CLASSES, input_dims=dict(DIMS), expansions=expansions, weights=weights,
                      thresholds=thresholds, mix={"av": 0.5, "visual": 0.3, "audio": 0.2})


def features(n: int = 9) -> dict[str, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(5))
    visual = rng.standard_normal((n, DIMS["visual"])).astype(np.float32)
    audio = rng.standard_normal((n, DIMS["audio"])).astype(np.float32)
    visual[7] = np.nan  # a sound alone
    audio[8] = np.nan  # a picture alone
    return {"visual": visual, "audio": audio}


@pytest.mark.parametrize("kind,expanded", [("analytic", False), ("analytic", True), ("class-means", False),
                                           ("class-means", True)])
def test_the_graph_scores_every_path_as_numpy_does(kind: str, expanded: bool) -> None:
    head = make_head(kind, expanded)
    graph = DeviceScores(head, CPU)
    rng = np.random.Generator(np.random.PCG64(7))
    for p in PATHS:
        x = unit_features([rng.standard_normal((6, DIMS[p]), dtype=np.float32)])
        want, got = head.scores(x, p), graph(x, p)
        assert got.dtype == np.float32 and got.shape == (6, len(CLASSES))
        assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()


def test_a_head_scoring_through_the_graph_judges_as_numpy_does() -> None:
    head = make_head("analytic", True, without="audio")
    on_graph = replace(head, scorer=DeviceScores(head, CPU))
    want, got = head.judge(features()), on_graph.judge(features())
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-6)
    assert np.array_equal(got[1], want[1]) and np.array_equal(got[2], want[2])
    assert not got[0][7].any()  # a sound alone, and the audio path has no weights: scores 0


def test_on_the_cpu_a_head_is_placed_as_it_is() -> None:
    head = make_head("analytic", False)
    assert head.placed(CPU) is head and head.scorer is None


def _cuda_missing() -> str | None:
    import onnxruntime as ort

    return None if PROVIDERS["cuda"] in ort.get_available_providers() else \
        "ONNX Runtime's CUDA provider is not installed here (onnxruntime-gpu on a GPU host)"


@pytest.mark.skipif(_cuda_missing() is not None, reason=str(_cuda_missing()))
def test_on_a_gpu_the_head_scores_as_numpy_does() -> None:
    head = make_head("class-means", True)
    on_gpu = head.placed(Placement("cuda"))
    assert isinstance(on_gpu.scorer, DeviceScores)
    want, got = head.judge(features()), on_gpu.judge(features())
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-6)
    assert np.array_equal(got[1], want[1]) and np.array_equal(got[2], want[2])
