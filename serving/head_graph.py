"""A head's scores as a small ONNX graph, its arrays kept where the graph runs (a GPU, or the CPU).

    scores = DeviceScores(head, placement)          # head: serving.head.ServedHead
    s = scores(x, "av")                             # (B, D_p) unit features -> (B, K) float32

What ``ServedHead.scores`` computes with NumPy, as a graph ONNX Runtime runs where a base's graphs
run (``serving/sessions.py``): on a GPU the head's float64 matrix products (``D x M`` and ``M x K``,
2,496 x 2,000 for `ranpac` over `lite`'s features) run there, and only a batch's unit features and
its scores cross. A path's graph takes the features and its arrays as inputs; the arrays are copied
to the device once, when the head is placed, and bound by reference on every call, so a new
version's head is new data for the same graphs: nothing is compiled when a class is learned.

The arithmetic is the NumPy side's: float32 features cast to float64, ``relu(x E)`` where the path has
an expansion, rows scaled to unit length for ``class-means``, ``h W`` in float64, cast to float32. The
same features give the same scores to float64 rounding (tests/serving/test_head_graph.py).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.sessions import Placement, placed_session

if TYPE_CHECKING:
    from serving.head import ServedHead

OPSET = 17


def head_graph(expanded: bool, unit_rows: bool) -> bytes:
    """The serialized graph ``x (B, D) float32[, expansion (D, M) float64], weights (M, K) float64 ->
    scores (B, K) float32``."""
    from onnx import TensorProto, helper

    double = TensorProto.DOUBLE
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "features"])]
    nodes = [helper.make_node("Cast", ["x"], ["h0"], to=double)]
    h = "h0"
    if expanded:
        inputs.append(helper.make_tensor_value_info("expansion", double, ["features", "expanded"]))
        nodes += [helper.make_node("MatMul", [h, "expansion"], ["projected"]),
                  helper.make_node("Relu", ["projected"], ["h1"])]
        h = "h1"
    initializers = []
    if unit_rows:  # h / max(||h||, 1e-12), as serving.head.unit_rows
        initializers = [helper.make_tensor("floor", double, [], [1e-12]),
                        helper.make_tensor("rows", TensorProto.INT64, [1], [1])]
        nodes += [helper.make_node("Mul", [h, h], ["squares"]),
                  helper.make_node("ReduceSum", ["squares", "rows"], ["sum"], keepdims=1),
                  helper.make_node("Sqrt", ["sum"], ["norm"]),
                  helper.make_node("Max", ["norm", "floor"], ["divisor"]),
                  helper.make_node("Div", [h, "divisor"], ["h2"])]
        h = "h2"
    inputs.append(helper.make_tensor_value_info("weights", double, ["expanded" if expanded else "features", "classes"]))
    nodes += [helper.make_node("MatMul", [h, "weights"], ["scores64"]),
              helper.make_node("Cast", ["scores64"], ["scores"], to=TensorProto.FLOAT)]
    outputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "classes"])]
    graph = helper.make_graph(nodes, "head_scores", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mcil-daemon")
    model.ir_version = 8
    return bytes(model.SerializeToString())


@lru_cache(maxsize=16)
def _session(expanded: bool, unit_rows: bool, placement: Placement, threads: int) -> Any:
    """One session per graph shape and placement, for every head placed there: a new version's head
    is new arrays for sessions already open."""
    return placed_session(head_graph(expanded, unit_rows), threads, placement)


class DeviceScores:
    """A head's per-path scores on ``placement`` (module docstring)."""

    def __init__(self, head: "ServedHead", placement: Placement, threads: int = 1) -> None:
        import onnxruntime as ort

        self.placement = placement
        self.classes = len(head.classes)
        device, number = placement.ort_device
        self._sessions: dict[bool, Any] = {}
        self._arrays: dict[str, dict[str, Any]] = {}
        for p, w in head.weights.items():
            e = head.expansions.get(p)
            expanded = e is not None
            self._sessions[expanded] = _session(expanded, head.kind == "class-means", placement, threads)
            arrays = {"weights": np.ascontiguousarray(w, dtype=np.float64)}
            if e is not None:
                arrays["expansion"] = np.ascontiguousarray(e, dtype=np.float64)
            self._arrays[p] = {name: ort.OrtValue.ortvalue_from_numpy(a, device, number) for name, a in arrays.items()}

    def __call__(self, x: np.ndarray, path: str) -> np.ndarray:
        """``(B, D_p)`` unit features of ``path`` -> ``(B, K)`` float32 (zeros where ``path`` has no weights)."""
        arrays = self._arrays.get(path)
        if arrays is None:
            return np.zeros((len(x), self.classes), dtype=np.float32)
        session = self._sessions["expansion" in arrays]
        binding = session.io_binding()
        binding.bind_cpu_input("x", np.ascontiguousarray(x, dtype=np.float32))
        for name, value in arrays.items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("scores", "cpu")
        session.run_with_iobinding(binding)
        out: np.ndarray = binding.copy_outputs_to_cpu()[0]
        return out
