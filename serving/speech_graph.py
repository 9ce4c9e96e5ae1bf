"""The speech embedding's graph made to run over a whole clip at once, with the same answer per window.

    whole = whole_clip_graph(Path("embedding_model.onnx").read_bytes())   # bytes of an ONNX model
    session.run(None, {"input_1": mel[None, :, :, None]})[0]            # (1, frames, 32, 1) -> (1, W, 1, 96)


openWakeWord's ``embedding_model.onnx`` takes windows of 76 log-mel frames, ``(N, 76, 32, 1)``, and
gives one 96-d embedding per window; a clip slides the window by 8 frames, so a 0.4 s digit's 5
windows compute 380 frames' worth of convolutions over 108 distinct frames, and a 5 s clip's 53
windows 4,028 over 497.

The network is a stack of 3x3, 1x3 and 3x1 convolutions (padding only along the 32 mel bins, none
along time), activations that act element by element, and max pools whose strides along time
multiply to 8, ending in a 3x1 convolution that leaves one step of time. Along time it is therefore
a valid convolution with stride 8: given ``F`` frames it computes ``(F - 76) // 8 + 1`` outputs, and
output ``w`` reads exactly frames ``8w .. 8w + 75``, through the same arithmetic the window alone
would go through. So two edits of the graph's shapes (no weight is touched) make it take a whole
clip's spectrogram and give every window's embedding, computing shared frames once:

- the ``Reshape`` that turns the padded ``(N, 76, 34, 1)`` input into ``(N, 1, 76, 34)`` gets
  ``(0, 1, -1, 34)`` (any number of frames) and the input's time dimension is made free;
- the final ``Reshape`` to ``(N, 1, 1, 96)`` becomes a ``Transpose`` to ``(N, W, 1, 96)``.

:func:`whole_clip_graph` checks the graph is the one this reasoning holds for (no padding or
stride along time except those pools; the two shape constants as expected) and raises
:class:`SpeechGraphError` naming what differs otherwise. ``tests/serving/test_speech_graph.py``
checks the answers against the window-at-a-time graph (equal to the bit on this machine), and
:func:`whole_clip_graph` itself checks a padded batch of random spectrograms before it returns.
A base (``serving/base.py``) stores the edited graph, so that a serving process checks it with ONNX
Runtime alone and never imports the ``onnx`` package (about 15 MiB); a base written before it did
is edited at load.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

WINDOW_FRAMES = 76
WINDOW_STEP = 8
MEL_BINS = 32
INPUT_RESHAPE = (-1, 1, WINDOW_FRAMES, MEL_BINS + 2)  # after padding the mel bins by one each side
OUTPUT_RESHAPE = (-1, 1, 1, 96)
ELEMENTWISE = {"Relu", "LeakyRelu", "BatchNormalization", "Max"}


def n_windows_of_frames(frames: int) -> int:
    """Whole windows in ``frames`` spectrogram frames: the outputs the whole-clip graph gives."""
    return max(0, (frames - WINDOW_FRAMES) // WINDOW_STEP + 1)


class SpeechGraphError(ValueError):
    """The embedding graph is not the one :func:`whole_clip_graph` knows how to run over a whole clip."""


def _attribute(node: object, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:  # type: ignore[attr-defined]
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else list(value) if isinstance(value, Sequence) else value
    return default


def _check_time_axis(graph: object) -> None:
    """Raises unless nothing pads or strides along time except max pools with strides multiplying to 8."""
    stride = 1
    for node in graph.node:  # type: ignore[attr-defined]
        op = node.op_type
        if op == "Conv":
            pads = _attribute(node, "pads", [0, 0, 0, 0])
            if _attribute(node, "strides", [1, 1])[0] != 1 or pads[0] or pads[2] or \
                    _attribute(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
                raise SpeechGraphError(f"{node.name}: a convolution pads or strides along time")
        elif op == "MaxPool":
            kernel, strides = _attribute(node, "kernel_shape", []), _attribute(node, "strides", [1, 1])
            if _attribute(node, "pads", [0, 0, 0, 0])[0::2] != [0, 0] or kernel[0] != strides[0] or \
                    _attribute(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID") or _attribute(node, "ceil_mode", 0):
                raise SpeechGraphError(f"{node.name}: a pool pads, rounds up or overlaps along time")
            stride *= strides[0]
        elif op in ("Pad", "Reshape") and node not in (graph.node[0], graph.node[1], graph.node[-1]):  # type: ignore[attr-defined]
            raise SpeechGraphError(f"{node.name}: an unexpected {op} inside the network")
        elif op not in ELEMENTWISE | {"Pad", "Reshape"}:
            raise SpeechGraphError(f"{node.name}: unexpected operator {op}")
    if stride != WINDOW_STEP:
        raise SpeechGraphError(f"the pools stride time by {stride}, not the windows' step {WINDOW_STEP}")


def whole_clip_graph(model: bytes) -> bytes:
    """openWakeWord's window embedding model -> the same model over a whole clip (module docstring).
    The edited graph is checked against the shipped one on a padded batch of random spectrograms
    before it is returned."""
    try:
        edited = _edited(model)
    except SpeechGraphError:
        raise
    except (KeyError, IndexError, ValueError) as exc:
        raise SpeechGraphError(f"not the graph expected ({type(exc).__name__}: {exc})") from None
    check_whole_clip_graph(model, edited)
    return edited


def check_whole_clip_graph(window_graph: bytes, whole_graph: bytes) -> None:
    """Raises unless every window of a padded batch of clips (1, 2 and 3 windows and some frames
    more) gets, from ``whole_graph``, the shipped graph's answer for that window alone (to 1e-5)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    window, whole = (ort.InferenceSession(g, options, providers=["CPUExecutionProvider"])
                     for g in (window_graph, whole_graph))
    name = window.get_inputs()[0].name
    lengths = [WINDOW_FRAMES, WINDOW_FRAMES + WINDOW_STEP + 3, WINDOW_FRAMES + 2 * WINDOW_STEP + 7]
    mels = 2 + np.random.default_rng(0).standard_normal((len(lengths), max(lengths), MEL_BINS, 1)).astype(np.float32)
    try:
        together = whole.run(None, {name: mels})[0]  # (clips, W, 1, 96)
    except Exception as exc:  # ONNX Runtime's own types
        raise SpeechGraphError(f"the whole-clip graph does not run over a batch of clips: {exc}") from None
    for row, frames in enumerate(lengths):
        for w in range(n_windows_of_frames(frames)):
            alone = window.run(None, {name: mels[row : row + 1, w * WINDOW_STEP : w * WINDOW_STEP + WINDOW_FRAMES]})[0]
            scale = max(1.0, float(np.abs(alone).max()))
            if together.shape[1:] != (n_windows_of_frames(max(lengths)), 1, alone.shape[-1]) or \
                    np.abs(together[row, w, 0] - alone.reshape(-1)).max() > 1e-5 * scale:
                raise SpeechGraphError(f"over a whole clip, window {w} of a {frames}-frame clip does not get the "
                                       "answer the window alone gets")


def _edited(model: bytes) -> bytes:
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load_from_string(model)
    graph = proto.graph
    constants = {init.name: init for init in graph.initializer}
    first, last = graph.node[1], graph.node[-1]
    if graph.node[0].op_type != "Pad" or first.op_type != "Reshape" or last.op_type != "Reshape":
        raise SpeechGraphError("expected Pad, Reshape ... Reshape (openwakeword's embedding_model.onnx)")
    pads = numpy_helper.to_array(constants[graph.node[0].input[1]])
    if pads.tolist() != [0, 0, 1, 0, 0, 0, 1, 0]:
        raise SpeechGraphError(f"the input is padded by {pads.tolist()}, expected one mel bin each side only")
    for node, expected in ((first, INPUT_RESHAPE), (last, OUTPUT_RESHAPE)):
        found = tuple(numpy_helper.to_array(constants[node.input[1]]).tolist())
        if found != expected:
            raise SpeechGraphError(f"{node.name}: reshapes to {found}, expected {expected}")
    _check_time_axis(graph)

    shape_name = first.input[1]
    constants[shape_name].CopyFrom(numpy_helper.from_array(np.array([0, 1, -1, MEL_BINS + 2], np.int64), shape_name))
    graph.node.remove(last)
    graph.node.append(helper.make_node("Transpose", [last.input[0]], [last.output[0]], perm=[0, 2, 3, 1]))
    graph.initializer.remove(constants[last.input[1]])
    graph.input[0].type.tensor_type.shape.dim[1].dim_param = "frames"
    graph.output[0].type.tensor_type.shape.dim[1].dim_param = "windows"
    del graph.value_info[:]  # shapes inferred for 76 frames no longer hold
    onnx.checker.check_model(proto)
    edited: bytes = proto.SerializeToString()
    return edited

