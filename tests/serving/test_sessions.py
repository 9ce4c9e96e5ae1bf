"""``serving/sessions.py``: where a base's graphs run, and clear errors where they cannot.

Placements parse from the setting's text with errors naming it; the TensorRT placement asks ONNX
Runtime for engine and timing caches in its folder and for fp16 only when told; a placement this
ONNX Runtime cannot run (here: any GPU, since ``onnxruntime`` has only its CPU provider) is refused
with what to install.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from serving.errors import PlacementError
from serving.head_graph import head_graph
from serving.sessions import CPU, PROVIDERS, Placement, placed_session


@pytest.mark.parametrize("text,kind,number", [("cpu", "cpu", 0), ("cuda", "cuda", 0), ("cuda:1", "cuda", 1),
                                              ("tensorrt:0", "tensorrt", 0)])
def test_placements_parse(text: str, kind: str, number: int) -> None:
    p = Placement.parse(text, "server.base_device")
    assert (p.kind, p.device_id, p.on_gpu) == (kind, number, kind != "cpu")


@pytest.mark.parametrize("text,precision,problem", [("gpu", "fp32", "cpu, cuda[:N] or tensorrt[:N]"),
                                                    ("cpu:0", "fp32", "cpu, cuda[:N] or tensorrt[:N]"),
                                                    ("cuda:-1", "fp32", "non-negative integer"),
                                                    ("cuda:", "fp32", "non-negative integer"),
                                                    ("tensorrt:\u00b2", "fp32", "non-negative integer"),
                                                    ("cuda", "fp16", "fp16 with tensorrt")])
def test_bad_placements_name_the_setting(text: str, precision: str, problem: str) -> None:
    with pytest.raises(PlacementError) as err:
        Placement.parse(text, "server.base_device", precision)
    assert err.value.field == "server.base_device" and problem in err.value.problem


def test_tensorrt_caches_its_engines_beside_the_base(tmp_path: Path) -> None:
    p = Placement.parse("tensorrt:1", "x", "fp16").with_cache(tmp_path)
    trt, cuda, cpu = p.providers()
    assert trt[0] == PROVIDERS["tensorrt"] and cuda[0] == PROVIDERS["cuda"] and cpu == PROVIDERS["cpu"]
    assert cuda[1]["device_id"] == "1" and cuda[1]["cudnn_conv_algo_search"] == "HEURISTIC"
    options = trt[1]
    assert options["device_id"] == "1" and options["trt_fp16_enable"] == "True"
    assert options["trt_engine_cache_enable"] == "True" and options["trt_engine_cache_path"] == str(tmp_path)
    assert options["trt_timing_cache_path"] == str(tmp_path)
    assert Placement("tensorrt").providers()[0][1]["trt_fp16_enable"] == "False"  # fp32 unless told
    assert "trt_engine_cache_path" not in Placement("tensorrt").providers()[0][1]
    assert CPU.providers() == [PROVIDERS["cpu"]]
    one_engine = Placement("tensorrt", profile=("images", (1, 3, 8, 8), (16, 3, 8, 8), (16, 3, 8, 8))).providers()[0][1]
    assert (one_engine["trt_profile_min_shapes"], one_engine["trt_profile_max_shapes"]) == ("images:1x3x8x8",
                                                                                         "images:16x3x8x8")
    assert p.on_cuda() == Placement("cuda", 1) and CPU.on_cuda() == CPU  # what TensorRT is not given
    with pytest.raises(PlacementError):
        Placement("cuda", -1)


def test_tensorrt_engines_are_ready_once_built_by_this_onnxruntime_for_this_gpu(tmp_path: Path) -> None:
    import json

    from serving.base import TRT_META, engines_ready, trt_folder

    base = tmp_path / ("ab" * 32)
    where = Placement("tensorrt", 1, "fp16")
    assert engines_ready(base, CPU) and engines_ready(base, Placement("cuda")) and not engines_ready(base, where)
    trt_folder(base, "fp16").mkdir(parents=True)
    meta = trt_folder(base, "fp16") / TRT_META
    for info, ready in (({"base": base.name, "device_id": 1, "onnxruntime": ort.__version__}, True),
                        ({"base": base.name, "device_id": 0, "onnxruntime": ort.__version__}, False),
                        ({"base": base.name, "device_id": 1, "onnxruntime": "1.0.0"}, False),
                        ({"base": "cd" * 32, "device_id": 1, "onnxruntime": ort.__version__}, False)):
        meta.write_text(json.dumps(info))
        assert engines_ready(base, where) is ready
    meta.write_text("{")
    assert not engines_ready(base, where)
    assert not engines_ready(base, Placement("tensorrt", 1, "fp32"))  # fp32 engines are another folder


@pytest.mark.skipif(PROVIDERS["cuda"] in ort.get_available_providers(), reason="ONNX Runtime's CUDA provider is here")
@pytest.mark.parametrize("text", ["cuda", "tensorrt"])
def test_a_gpu_this_onnxruntime_cannot_reach_is_refused_with_what_to_install(text: str) -> None:
    with pytest.raises(PlacementError) as err:
        Placement.parse(text, "server.base_device").check_available("server.base_device")
    assert err.value.field == "server.base_device"
    assert "CUDAExecutionProvider" in err.value.problem and "onnxruntime-gpu" in err.value.problem
    CPU.check_available("server.base_device")  # the CPU always runs


def test_a_cpu_session_runs() -> None:
    session = placed_session(head_graph(expanded=False, unit_rows=False), threads=1)
    x, w = np.ones((2, 3), np.float32), np.ones((3, 4), np.float64)
    assert session.run(None, {"x": x, "weights": w})[0].tolist() == [[3.0] * 4] * 2
