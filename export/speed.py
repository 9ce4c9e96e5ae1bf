"""What Classify costs in one process: the frozen monolith, the hybrid path and the compiled version.

Three ways to answer the same decoded samples, timed side by side (``service/classify_speed.py``
runs them and the gRPC measurement as one command)::

    monolith   the frozen encoders exported whole, no experts: inputs prepared, the audio encoder,
               the image encoder as one ONNX graph. The physical reference: no learned part at all.
    hybrid     Learner.predict: frozen blocks in PyTorch, experts, fusion and head in PyTorch
    compiled   CompiledVersion.predict: inputs prepared, the audio encoder, one graph per path

and where the time goes, stage by stage (:func:`stage_times`), each stage timed alone on the same
batch.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from export.onnx import OPSET
from export.served_graphs import to_onnx

if TYPE_CHECKING:
    import onnxruntime

    from export.compiled import CompiledVersion
    from model.learner import Learner
    from model.samples import Sample


class _FrozenImage(nn.Module):
    def __init__(self, learner: "Learner") -> None:
        super().__init__()
        self.backbone = copy.deepcopy(learner.backbone)
        self.backbone.image.set_runner(None)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:  # (images,): the signature to_onnx exports
        out: torch.Tensor = self.backbone.image.frozen_features(inputs[0])
        return out


class Monolith:
    """The frozen image encoder as one ONNX graph, with the learner's own input preparation and audio
    encoder (already ONNX): the cost of the frozen network alone."""

    def __init__(self, learner: "Learner", threads: int) -> None:
        from serving.sessions import cpu_session as session

        self.learner = learner
        size = learner.backbone.image_size
        graph = to_onnx(_FrozenImage(learner).eval(), (torch.randn(2, 3, size, size),), ["images"], "features",
                        opset=OPSET)  # the frozen segments' opset
        self.session: "onnxruntime.InferenceSession" = session(graph, threads)

    def image_features(self, images: torch.Tensor) -> np.ndarray:
        out: np.ndarray = self.session.run(None, {"images": images.numpy()})[0]
        return out

    def forward(self, samples: Sequence["Sample"]) -> None:
        batch = self.learner.encode_inputs(samples)
        rows = batch.has_image.nonzero().flatten()
        if len(rows):
            self.image_features(batch.images[rows])


def side_by_side(actions: Mapping[str, Callable[[], object]], runs: int) -> dict[str, list[float]]:
    """Times every action ``runs`` times, interleaved round by round in a rotating order, so that
    they share whatever else the machine is doing."""
    for action in actions.values():
        action()
    out: dict[str, list[float]] = {name: [] for name in actions}
    names = list(actions)
    for r in range(runs):
        for name in names[r % len(names):] + names[:r % len(names)]:
            started = time.perf_counter()
            actions[name]()
            out[name].append(time.perf_counter() - started)
    return out


def stage_times(learner: "Learner", compiled: "CompiledVersion", monolith: Monolith,
                samples: Sequence["Sample"], runs: int) -> dict[str, float]:
    """Median milliseconds of each stage of Classify on ``samples`` (pairs), each stage timed alone."""
    from model.head_inputs import head_scores

    b = learner.backbone
    images_in = [s.image for s in samples]
    waves = [s.audio for s in samples]
    rates = [s.sample_rate for s in samples]
    batch = learner.encode_inputs(samples)
    prepared = b.prepare_audio(waves, rates)  # type: ignore[arg-type]
    encoder = b.audio
    log_mel = getattr(encoder, "log_mel", None)
    stages: dict[str, Callable[[], object]] = {
        "image preparation (resize, normalise)": lambda: b.prepare_images(images_in),  # type: ignore[arg-type]
        "audio preparation (resample, fit the clip)": lambda: b.prepare_audio(waves, rates),  # type: ignore[arg-type]
        "audio encoder (mel + embedding windows)": lambda: b.encode_audio_raw(prepared),
    }
    if log_mel is not None:
        stages["audio encoder: mel spectrogram alone"] = lambda: [log_mel(w) for w in prepared.numpy()]
    with torch.no_grad():
        v = b.encode_image(batch.images)
        out = learner.fused_features(batch)
        stages.update({
            "hybrid: frozen image blocks (PyTorch)": lambda: b.image.frozen_features(batch.images),
            "hybrid: image blocks with experts (PyTorch)": lambda: b.encode_image(batch.images),
            "hybrid: projection + fusion": lambda: learner.fusion(v, b.project_audio(batch.audio), batch.has_image,
                                                                   batch.has_audio, learner.prototypes,
                                                                   learner.logit_scale),
            "hybrid: head (statistics, unknown)": lambda: head_scores(learner, learner.head, batch, out)
            if learner.head is not None else None,
            "compiled: graphs (experts, fusion, head)": lambda: compiled.scores(batch),
            "monolith: frozen image graph": lambda: monolith.image_features(batch.images),
        })
        medians = {name: 1000 * statistics.median(side_by_side({name: action}, runs)[name])
                   for name, action in stages.items()}
    return medians


def image_gflop(learner: "Learner") -> dict[str, float]:
    """Floating-point operations (GFLOP, one image, counted by PyTorch's FlopCounterMode) of the image
    tower alone and with the version's experts: the arithmetic the experts add."""
    from torch.utils.flop_counter import FlopCounterMode

    b = learner.backbone
    image = torch.zeros(1, 3, b.image_size, b.image_size)
    out = {}
    for name, forward in (("frozen", b.image.frozen_features), ("with_experts", b.encode_image)):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            forward(image)
        out[name] = counter.get_total_flops() / 1e9
    return out


def graph_op_profile(graph: bytes, feeds: dict[str, np.ndarray], runs: int, threads: int) -> dict[str, float]:
    """Milliseconds per run spent in each ONNX operator type of ``graph`` (ONNX Runtime's profiler),
    most expensive first."""
    import json

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with tempfile.TemporaryDirectory(prefix="mcil-profile-") as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "graph")
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
            op = str(event["args"]["op_name"])
            totals[op] = totals.get(op, 0.0) + float(event["dur"]) / 1000.0 / (runs + 1)
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))
