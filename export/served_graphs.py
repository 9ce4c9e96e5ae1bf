"""The served forward of a committed version, one graph per modality path, exported to ONNX.

A committed version never changes, so everything between the model-ready inputs and the class
scores can run as one graph per modality path (``export/compiled.py`` serves them)::

    visual   images (B, 3, H, W)                        -> scores (B, K)
    audio    audio (B, audio_dim)                       -> scores (B, K)
    av       images (B, 3, H, W), audio (B, audio_dim)  -> scores (B, 2K): [answer | joint path's own]

Each graph holds the frozen image blocks with the version's experts and routers, the projections,
the fusion module and the statistics head (its random expansions and solved weights; the ``av``
graph holds every path the head's answer to a pair weighs), exactly as
:meth:`model.learner.Learner.infer` computes them (``model/head_inputs.py``). ``audio`` is the frozen
audio encoder's output (``EncodedBatch.audio``): the encoder is already ONNX (the speech embedding's
two files) and its windows differ in number per clip, so it runs before the graphs.

Two rewrites keep each graph free of data-dependent shapes, and one makes it cheaper; all compute
the same sums:

- the mixtures of experts run every expert on every sample, weighed by the (sparse) gates
  (``MixtureOfExperts.dense``); the eager learner runs only the routed experts;
- the fusion module takes the branch-free form for pairs (``fuse_pairs``);
- a CNN block's experts become four dense 1x1 convolutions (``export/graph_experts.py``).

Only versions scored by a statistics head (``analytic`` or ``class-means``) compile: the prototype
scores of the other strategies stay on the hybrid path (:func:`compile_problem` says why).
"""

from __future__ import annotations

import copy
import io
import tempfile
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from export.decompositions import decompose_unsupported
from export.errors import CompileError
from export.graph_experts import fuse_conv_mixtures
from export.onnx import BATCH_DIM, MAX_BATCH
from model.experts import MixtureOfExperts
from model.fusion import AAVFM, ConcatFusion
from model.heads import unit_features

if TYPE_CHECKING:
    from model.learner import Learner

OPSET = 20
"""The graphs' opset: from 20, GELU is one ONNX node that ONNX Runtime runs as one kernel (at 18 the
exporter spells it with Erf, Div, Mul and Add; the lite av graph took 156 ms at batch 32 instead of
134 on 2 cores). The frozen segments keep ``export.onnx.OPSET`` (18), what TensorRT 10 parses."""
GRAPH_PATHS = ("av", "visual", "audio")
INPUTS = {"av": ("images", "audio"), "visual": ("images",), "audio": ("audio",)}


def compile_problem(learner: "Learner") -> str:
    """Why ``learner`` cannot be served as graphs, or ``""`` when it can."""
    if learner.head is None:
        return (f"strategy {learner.strategy_name!r} scores with text prototypes; only versions with a "
                "statistics head (analytic, class-means) compile")
    if not learner.strategy.compiles:
        return (f"strategy {learner.strategy_name!r} computes its features with a network of its own, "
                "which the graphs do not hold")
    if not learner.classes:
        return "no classes learned yet"
    return ""


class ServedPath(nn.Module):
    """One modality path of a version's served forward: model-ready inputs -> head scores ``(B, K)``.

    Holds copies of the learned parts (experts, routers, projections, fusion) and shares the frozen
    tensors with the learner (``TriModalBackbone.__deepcopy__``); the learner is left as it was."""

    def __init__(self, learner: "Learner", path: str) -> None:
        super().__init__()
        head = learner.head
        if head is None or path not in served_paths(learner):
            raise CompileError(f"head.{path}", "the head has no solved weights for this path")
        self.path = path
        self.features = learner.config.head.features
        self.backbone = copy.deepcopy(learner.backbone)
        self.backbone.image.set_runner(None)  # the graph holds the frozen blocks themselves
        for mixture in self.backbone.image.mixtures:
            cast_mixture(mixture).dense = True
        fuse_conv_mixtures(self.backbone.image.adapters)  # a CNN's experts as 1x1 convolutions
        fusion = copy.deepcopy(learner.fusion)
        if not isinstance(fusion, (AAVFM, ConcatFusion)):
            raise CompileError("fusion", f"no branch-free form for {type(fusion).__name__}")
        self.fusion = fusion
        self.logit_scale = learner.logit_scale
        self.class_means = head.kind == "class-means"
        self.register_buffer("prototypes", learner.prototypes.detach().clone())
        # The head paths this graph's scores are made of: a pair's answer weighs every path
        # (StatisticsHead.pair_scores), a single input's is its own path's. The av graph also returns
        # the joint path's own scores, on which a pair is judged unknown: (B, 2K), [answer | joint].
        self.mix = head.fusion_weights() if path == "av" else {path: 1.0}
        self.joint = path == "av" and "av" in head.weights
        for p in sorted(set(self.mix) | ({"av"} if self.joint else set())):
            expansion = head.expansions[p]
            self.register_buffer(f"expansion_{p}", None if expansion is None else expansion.clone())
            self.register_buffer(f"weights_{p}", head.weights[p].clone())
        self.eval()

    prototypes: torch.Tensor

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        named = dict(zip(INPUTS[self.path], inputs))
        images, audio = named.get("images"), named.get("audio")
        frozen: dict[str, torch.Tensor] = {}
        adapted: dict[str, torch.Tensor] = {}
        if self.features in ("frozen", "both"):
            if images is not None:
                frozen["visual"] = self.backbone.image.frozen_features(images)
            if audio is not None:
                frozen["audio"] = audio
        if self.features in ("adapted", "both"):
            if images is not None:
                adapted["visual"] = self.backbone.encode_image(images)
            if audio is not None:
                adapted["audio"] = self.backbone.project_audio(audio)
            if images is not None and audio is not None:
                adapted["fused"] = self.fusion.fuse_pairs(adapted["visual"], adapted["audio"], self.prototypes,
                                                          self.logit_scale)
        by_path: dict[str, torch.Tensor] = {}
        for p in sorted(set(self.mix) | ({"av"} if self.joint else set())):
            modalities = ("visual", "audio") if p == "av" else (p,)
            parts = [frozen[m] for m in modalities if m in frozen] + [adapted[m] for m in modalities if m in adapted]
            if p == "av" and "fused" in adapted:
                parts.append(adapted["fused"])
            x = unit_features(parts)
            expansion: torch.Tensor | None = getattr(self, f"expansion_{p}")
            h = x if expansion is None else torch.relu(x @ expansion)
            if self.class_means:
                h = F.normalize(h, dim=1)
            by_path[p] = h @ getattr(self, f"weights_{p}")
        answer = sum((w * by_path[p] for p, w in self.mix.items()), start=torch.zeros(()))
        if self.path != "av":
            return answer
        joint = by_path["av"] if self.joint else torch.zeros_like(answer)
        return torch.cat([answer, joint], dim=1)


def cast_mixture(module: nn.Module) -> MixtureOfExperts:
    if not isinstance(module, MixtureOfExperts):
        raise CompileError("backbone.image.adapters", f"expected MixtureOfExperts, got {type(module).__name__}")
    return module


def example_inputs(learner: "Learner", path: str, batch: int = 2) -> tuple[torch.Tensor, ...]:
    """Model-ready inputs of the right shapes (random, seeded) for tracing and checking a graph."""
    b = learner.backbone
    gen = torch.Generator().manual_seed(0)
    tensors = {"images": torch.randn(batch, 3, b.image_size, b.image_size, generator=gen),
               "audio": torch.randn(batch, b.audio_dim, generator=gen).abs()}
    return tuple(tensors[name] for name in INPUTS[path])


def to_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], input_names: Sequence[str], output_name: str,
            opset: int = OPSET) -> bytes:
    """``module`` as ONNX bytes, every input's first axis a dynamic ``batch``. Its ``forward`` must be
    declared ``forward(self, *inputs)`` (the dynamic shapes are given for that one variadic
    argument). The exporter's own exceptions propagate."""
    batch = torch.export.Dim(BATCH_DIM, min=1, max=MAX_BATCH)
    dynamic = (tuple({0: batch} for _ in args),)  # forward(*inputs): one entry holding every input's
    with tempfile.TemporaryDirectory(prefix="mcil-compile-") as tmp:
        file = Path(tmp) / "graph.onnx"
        with redirect_stdout(io.StringIO()), warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used", category=UserWarning)
            program = torch.export.export(module, args, dynamic_shapes=dynamic, strict=False)
            torch.onnx.export(decompose_unsupported(program), (), str(file), input_names=list(input_names),
                              output_names=[output_name], opset_version=opset, dynamo=True, external_data=False,
                              verbose=False)
        return file.read_bytes()


def export_path(learner: "Learner", path: str) -> bytes:
    """The ONNX model (bytes) of one modality path, checked against the eager module."""
    module = ServedPath(learner, path).cpu()
    args = example_inputs(learner, path)
    try:
        data = to_onnx(module, args, INPUTS[path], "scores")
    except Exception as exc:  # the exporter raises many unrelated types
        raise CompileError(f"graphs.{path}", f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    check_graph(data, module, args, path)
    return data


def check_graph(data: bytes, module: nn.Module, args: tuple[torch.Tensor, ...], path: str,
                tolerance: float = 1e-4) -> None:
    """Raises :class:`CompileError` unless the graph reproduces ``module`` on ``args``."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(None, {name: a.numpy() for name, a in zip(INPUTS[path], args)})[0]
    with torch.no_grad():
        want = module(*args).numpy()
    worst = float(abs(got - want).max(initial=0.0))
    if got.shape != want.shape or not worst <= tolerance:
        raise CompileError(f"graphs.{path}", f"the exported graph differs from PyTorch by {worst:g} "
                           f"(tolerance {tolerance:g})")


def export_graphs(learner: "Learner") -> dict[str, bytes]:
    """Every modality path the version's head has weights for, as ONNX bytes. Raises CompileError."""
    problem = compile_problem(learner)
    if problem:
        raise CompileError("strategy", problem)
    return {path: export_path(learner, path) for path in served_paths(learner)}


def served_paths(learner: "Learner") -> list[str]:
    """The modality paths that get a graph: those the head has solved weights for, and ``av`` when
    every path of the head's answer to a pair has them (``StatisticsHead.fusion_weights``)."""
    head = learner.head
    if head is None:
        return []
    mix = head.fusion_weights()
    return [p for p in GRAPH_PATHS
            if (all(q in head.weights for q in mix) if p == "av" else p in head.weights)]

