"""The embedding graph over whole clips gives each window the shipped graph's answer; graphs it does
not know how to edit are refused by name.

Skips when ``openwakeword`` (which holds the ONNX files) is not installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

try:
    from serving.speech import package_model_dir

    EMBEDDING = package_model_dir() / "embedding_model.onnx"
except FileNotFoundError:
    EMBEDDING = Path("/nonexistent")

pytestmark = pytest.mark.skipif(not EMBEDDING.is_file(), reason="openwakeword==0.4.0 is not installed (pip install -e .)")


def session(model: bytes) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def test_every_window_of_a_whole_clip_equals_the_window_alone() -> None:
    from serving.speech_graph import WINDOW_FRAMES, WINDOW_STEP, whole_clip_graph

    shipped = EMBEDDING.read_bytes()
    window, whole = session(shipped), session(whole_clip_graph(shipped))
    rng = np.random.default_rng(0)
    for frames in (WINDOW_FRAMES, WINDOW_FRAMES + 7, WINDOW_FRAMES + 8, 497):  # 1, 1, 2 and 53 windows
        mel = (2 + rng.standard_normal((frames, 32))).astype(np.float32)
        windows = (frames - WINDOW_FRAMES) // WINDOW_STEP + 1
        alone = np.concatenate([
            window.run(None, {"input_1": mel[None, w * WINDOW_STEP : w * WINDOW_STEP + WINDOW_FRAMES, :, None]})[0]
            for w in range(windows)
        ]).reshape(windows, 96)
        together = whole.run(None, {"input_1": mel[None, :, :, None]})[0]
        assert together.shape == (1, windows, 1, 96)
        scale = np.abs(alone).max()
        assert np.abs(together[0, :, 0] - alone).max() <= 1e-6 * scale, frames  # equal to the bit here


def edited(change: Any) -> bytes:
    model = onnx.load(str(EMBEDDING))
    change(model.graph)
    return model.SerializeToString()


def test_a_graph_that_pads_or_strides_along_time_is_refused_by_name() -> None:
    from onnx import helper, numpy_helper

    from serving.speech_graph import SpeechGraphError, whole_clip_graph

    def pad_time(graph: Any) -> None:
        init = next(i for i in graph.initializer if i.name == graph.node[0].input[1])
        init.CopyFrom(numpy_helper.from_array(np.array([0, 1, 1, 0, 0, 1, 1, 0], np.int64), init.name))

    def stride_time(graph: Any) -> None:
        conv = next(n for n in graph.node if n.op_type == "Conv" and n.name.endswith("conv2d_2/Conv2D"))
        for a in conv.attribute:
            if a.name == "strides":
                a.CopyFrom(helper.make_attribute("strides", [2, 1]))

    def extra_pool(graph: Any) -> None:
        pool = next(n for n in graph.node if n.op_type == "MaxPool" and "pooling2d_1" in n.name)
        for a in pool.attribute:
            if a.name in ("strides", "kernel_shape"):
                a.CopyFrom(helper.make_attribute(a.name, [2, 2]))

    def round_up(graph: Any) -> None:
        pool = next(n for n in graph.node if n.op_type == "MaxPool")
        pool.attribute.append(helper.make_attribute("ceil_mode", 1))

    for change, words in ((pad_time, "padded by"), (stride_time, "conv2d_2/Conv2D: a convolution pads or strides"),
                          (extra_pool, "stride time by 16"), (round_up, "rounds up")):
        with pytest.raises(SpeechGraphError, match=words):
            whole_clip_graph(edited(change))

