"""Compiled versions (export/compiled.py, export/served_graphs.py) answer what the learner answers.

A compiled version serves a learner's forward from one ONNX graph per modality path, with the
experts run densely and the fusion branch-free. These tests hold it to :meth:`Learner.predict` on
real learners (synthetic data, no mocks), through a write/load round trip and a learner's own
save/load, and check what it refuses and that compiling leaves the learner as it was.

Compiling a ``tiny`` learner takes seconds, so each learner is built and compiled once per module
(:func:`versions`). The daemon compiles versions whose head reads adapted features; versions whose
head reads the frozen features (``mcil``, ``ranpac``, ``simplecil``) are served as their head over a
base instead (tests/export/test_head_version.py, tests/serving/), so their graphs are held to the
learner here only for the default, ``mcil``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from export.compiled import META_FILE, CompiledVersion, graph_file
from export.errors import CompileError
from model.backbone import TriModalBackbone
from model.errors import InvalidInputError
from model.experts import MixtureOfExperts
from model.heads import HeadConfig
from model.learner import Learner
from model.learner_config import LearnerConfig
from model.samples import PATHS, Prediction, Sample
from model.strategies import create_strategy
from model.synthetic import make_dataset
from model.training import TrainingConfig

SCORE_TOLERANCE = 1e-4
"""Largest difference allowed between a compiled score and the learner's (scores lie in [0, 1]).

The graphs compute the same sums as the eager learner, but in another order: ONNX Runtime's kernels,
the experts run densely (every expert weighed by its gate, zero off the top-k) and the fusion's
branch-free form. Float32 rounding then differs by ~1e-6 on these models; 1e-4 is the tolerance
``export.served_graphs.check_graph`` accepts at compile time, and still far below any margin that
decides a ranking here."""

DISPATCH_TOLERANCE = 1e-5
"""Dense and sparse expert dispatch (``MixtureOfExperts.dense``) add the same products in another
order: image features (magnitudes ~1) agree to float32 rounding."""

FAST = LearnerConfig(training=TrainingConfig(epochs=1, min_steps=2))
"""Just enough training to move the experts: parity needs learned state, not accuracy."""

TASKS = ((["red", "green"], 0), (["blue", "yellow"], 2))
"""Two tasks of two synthetic classes: ``(class names, first pattern index)``."""

VARIANTS: dict[str, tuple[str, LearnerConfig]] = {
    "mcil": ("mcil", FAST),  # the default: analytic head over the frozen features, paths weighed
    "mcil-adapted": ("mcil", LearnerConfig(training=FAST.training, head=HeadConfig(features="adapted"))),
    "mcil-both": ("mcil", LearnerConfig(training=FAST.training, head=HeadConfig(features="both"))),
}
"""The statistics-head configurations that compile, by name: ``(strategy, config)``."""

EXPECTED_HEADS = {"mcil": ("analytic", "frozen"), "mcil-adapted": ("analytic", "adapted"), "mcil-both": ("analytic", "both")}


def learn_tasks(learner: Learner, tasks: tuple[tuple[list[str], int], ...] = TASKS, per_class: int = 6) -> Learner:
    for i, (names, first) in enumerate(tasks):
        learner.learn_task(make_dataset(names, per_class, seed=10 + i, first_index=first), names)
    return learner


def mixed_batch(per_class: int = 3, seed: int = 99) -> list[Sample]:
    """Held-out samples of the four classes, cycling through pairs, image-only and audio-only."""
    held_out = make_dataset(["red", "green", "blue", "yellow"], per_class, seed=seed)
    return [s.only(PATHS[i % len(PATHS)]) for i, s in enumerate(held_out)]


def assert_same_predictions(eager: list[Prediction], compiled: list[Prediction]) -> None:
    """Top-1, path and unknown flag identical; every class's score within SCORE_TOLERANCE; the
    rankings identical (classes whose eager scores tie within SCORE_TOLERANCE may swap places)."""
    assert len(compiled) == len(eager)
    for i, (want, got) in enumerate(zip(eager, compiled)):
        where = f"sample {i} ({want.path})"
        assert got.path == want.path, where
        assert got.unknown == want.unknown, where
        assert got.classes[0] == want.classes[0], f"{where}: top-1 {got.classes[0]} != {want.classes[0]}"
        assert set(got.classes) == set(want.classes), where
        got_scores = dict(zip(got.classes, got.scores))
        for name, score in zip(want.classes, want.scores):
            assert abs(got_scores[name] - score) <= SCORE_TOLERANCE, f"{where}: {name} {got_scores[name]} vs {score}"
        start = 0  # runs of eager scores tied within the tolerance: the same classes, in any order
        for end in range(1, len(want.scores) + 1):
            if end == len(want.scores) or want.scores[end - 1] - want.scores[end] > SCORE_TOLERANCE:
                assert set(got.classes[start:end]) == set(want.classes[start:end]), f"{where}: ranking"
                start = end


def assert_informative(predictions: list[Prediction]) -> None:
    """Guards the parity checks: every path is present and the learner tells classes apart."""
    assert {p.path for p in predictions} == set(PATHS)
    assert len({p.classes[0] for p in predictions}) >= 2
    for path in PATHS:
        assert max(p.scores[0] for p in predictions if p.path == path) > 0.5, path


@dataclass
class Version:
    learner: Learner
    compiled: CompiledVersion
    batch: list[Sample]
    before: list[Prediction]  # the learner's predictions on ``batch`` before it was compiled
    learned_before: dict[str, torch.Tensor]  # its learned tensors before it was compiled


@pytest.fixture(scope="module")
def versions(tiny_backbone: TriModalBackbone) -> Callable[[str], Version]:
    """``versions(name)``: the VARIANTS learner after TASKS, compiled; each built once per module."""
    built: dict[str, Version] = {}

    def get(name: str) -> Version:
        if name not in built:
            strategy, config = VARIANTS[name]
            learner = learn_tasks(Learner(copy.deepcopy(tiny_backbone), create_strategy(strategy), config, "tiny"))
            batch = mixed_batch()
            before = learner.predict(batch, top_k=4)
            learned = learner.learned_tensors()
            built[name] = Version(learner, CompiledVersion.compile(learner), batch, before, learned)
        return built[name]

    return get


# -- 1. parity ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(VARIANTS))
def test_compiled_predictions_match_the_learner(versions: Callable[[str], Version], name: str) -> None:
    v = versions(name)
    assert (v.learner.config.head.kind, v.learner.config.head.features) == EXPECTED_HEADS[name]
    assert sorted(v.compiled.graphs) == sorted(PATHS)
    eager = v.learner.predict(v.batch, top_k=4)
    assert_informative(eager)
    assert_same_predictions(eager, v.compiled.predict(v.batch, top_k=4))
    # a smaller top_k ranks the same leading classes
    assert [p.classes for p in v.compiled.predict(v.batch, top_k=2)] == [p.classes[:2] for p in eager]


@pytest.mark.parametrize("path", PATHS)
def test_a_batch_of_one_runs_each_graph(versions: Callable[[str], Version], path: str) -> None:
    """The graphs' batch dimension is dynamic down to 1 (they were traced with 2)."""
    v = versions("mcil")
    sample = [s for s in v.batch if s.path == path][:1]
    assert_same_predictions(v.learner.predict(sample, top_k=4), v.compiled.predict(sample, top_k=4))


def test_batches_larger_than_a_chunk_match(versions: Callable[[str], Version]) -> None:
    """More samples on one path than ``ENCODE_CHUNK`` (16): the graph runs chunk by chunk, in order."""
    v = versions("mcil")
    batch = mixed_batch(per_class=20, seed=7)  # 80 samples, ~27 per path
    batch += [s.only("visual") for s in make_dataset(["red", "blue"], 40, seed=8)]  # visual: 27 + 80 > 16
    assert_same_predictions(v.learner.predict(batch, top_k=4), v.compiled.predict(batch, top_k=4))


def test_scores_match_the_learners_head(versions: Callable[[str], Version]) -> None:
    """``scores`` (unclamped, before ranking) equal ``Learner.infer``'s, with the same paths and flags."""
    v = versions("mcil")
    batch = v.learner.encode_inputs(v.batch)
    out = v.learner.infer(batch)
    scores, paths, unknown = v.compiled.scores(batch)
    assert scores.shape == out.logits.shape
    assert float((scores - out.logits.cpu()).abs().max()) <= SCORE_TOLERANCE
    assert torch.equal(paths, out.fusion.path.cpu())
    assert out.unknown is not None and torch.equal(unknown, out.unknown.cpu())


# -- 2. round trips -----------------------------------------------------------------------------------
def test_write_and_load_round_trip(versions: Callable[[str], Version], tmp_path: Path,
                                   tiny_backbone: TriModalBackbone) -> None:
    v = versions("mcil")
    in_memory = v.compiled.predict(v.batch, top_k=4)
    assert not CompiledVersion.present(tmp_path)
    v.compiled.write(tmp_path)
    assert CompiledVersion.present(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([META_FILE, *(graph_file(p) for p in PATHS)])

    loaded = CompiledVersion.load(tmp_path, v.learner)
    assert sorted(loaded.sessions) == sorted(v.compiled.sessions) and loaded.graphs == {}  # no bytes kept
    assert loaded.predict(v.batch, top_k=4) == in_memory

    # The learner saved next to its graphs and loaded from disk: the graphs still belong to it.
    v.learner.save(tmp_path)
    learner = Learner.load(tmp_path, backbone=tiny_backbone)
    assert learner is not v.learner and learner.classes == v.learner.classes
    reloaded = CompiledVersion.load(tmp_path, learner)
    assert reloaded.learner is learner
    assert reloaded.predict(v.batch, top_k=4) == in_memory
    assert_same_predictions(learner.predict(v.batch, top_k=4), in_memory)


# -- 3. refusals --------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["mcil-paper", "finetune"])
def test_a_prototypes_head_does_not_compile(tiny_backbone: TriModalBackbone, strategy: str) -> None:
    learner = Learner(copy.deepcopy(tiny_backbone), create_strategy(strategy), FAST, "tiny")
    learn_tasks(learner, TASKS[:1], per_class=4)
    assert learner.head is None and learner.classes
    with pytest.raises(CompileError) as err:
        CompiledVersion.compile(learner)
    assert err.value.field == "strategy"
    assert strategy in err.value.problem


def test_a_learner_without_classes_does_not_compile(tiny_backbone: TriModalBackbone) -> None:
    learner = Learner(copy.deepcopy(tiny_backbone), create_strategy("mcil"), FAST, "tiny")
    with pytest.raises(CompileError) as err:
        CompiledVersion.compile(learner)
    assert err.value.field == "strategy"
    assert "no classes" in err.value.problem


def test_graphs_of_another_learner_state_are_refused(versions: Callable[[str], Version], tmp_path: Path) -> None:
    v = versions("mcil")
    v.compiled.write(tmp_path)
    later = learn_tasks(v.learner.clone(), ((["purple", "cyan"], 4),))
    assert later.classes == [*v.learner.classes, "purple", "cyan"]
    with pytest.raises(CompileError) as err:
        CompiledVersion.load(tmp_path, later)
    assert err.value.field == f"{META_FILE}.state_sha256"
    CompiledVersion.load(tmp_path, v.learner)  # the learner they came from still loads them


DAMAGES: dict[str, Callable[[Path], None]] = {
    "garbage": lambda f: f.write_bytes(b"this is not an ONNX model"),
    "truncated": lambda f: f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2]),
    "missing": lambda f: f.unlink(),
    # A readable graph of the wrong kind in its place: caught by the checksum in compiled.json.
    "another-graph": lambda f: f.write_bytes((f.parent / graph_file("audio" if "av" in f.name else "av")).read_bytes()),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("path", PATHS)
def test_a_damaged_graph_file_is_named_in_the_error(versions: Callable[[str], Version], tmp_path: Path,
                                                    path: str, damage: str) -> None:
    """A CompileError, not ONNX Runtime's own exception types: the daemon catches CompileError to serve
    the hybrid path."""
    v = versions("mcil")
    v.compiled.write(tmp_path)
    DAMAGES[damage](tmp_path / graph_file(path))
    with pytest.raises(CompileError) as err:
        CompiledVersion.load(tmp_path, v.learner)
    assert err.value.field == graph_file(path)


def _edit_meta(edit: Callable[[dict[str, object]], object]) -> Callable[[Path], None]:
    def apply(file: Path) -> None:
        meta = json.loads(file.read_text())
        edit(meta)
        file.write_text(json.dumps(meta))
    return apply


META_DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing": (lambda f: f.unlink(), META_FILE),
    "not-json": (lambda f: f.write_text('{"format": 1, "paths": ['), META_FILE),
    "not-an-object": (lambda f: f.write_text("[1, 2, 3]"), META_FILE),
    "no-state-digest": (_edit_meta(lambda m: m.pop("state_sha256")), META_FILE),
    "no-paths": (_edit_meta(lambda m: m.pop("paths")), META_FILE),
    "other-format": (_edit_meta(lambda m: m.update(format=99)), f"{META_FILE}.format"),
    "unknown-path": (_edit_meta(lambda m: m.update(paths=["av", "smell"])), f"{META_FILE}.paths"),
    "other-state": (_edit_meta(lambda m: m.update(state_sha256="0" * 64)), f"{META_FILE}.state_sha256"),
}


@pytest.mark.parametrize("damage", list(META_DAMAGES))
def test_a_missing_or_garbled_meta_file_raises(versions: Callable[[str], Version], tmp_path: Path,
                                               damage: str) -> None:
    v = versions("mcil")
    v.compiled.write(tmp_path)
    apply, field = META_DAMAGES[damage]
    apply(tmp_path / META_FILE)
    with pytest.raises(CompileError) as err:
        CompiledVersion.load(tmp_path, v.learner)
    assert err.value.field == field


def test_meta_listing_fewer_paths_than_the_head_is_refused(versions: Callable[[str], Version],
                                                          tmp_path: Path) -> None:
    v = versions("mcil")
    v.compiled.write(tmp_path)
    _edit_meta(lambda m: m.update(paths=["audio", "av"]))(tmp_path / META_FILE)
    with pytest.raises(CompileError) as err:
        CompiledVersion.load(tmp_path, v.learner)
    assert err.value.field == f"{META_FILE}.paths"


@pytest.mark.parametrize("top_k", [0, -1, 2.0, None])
def test_a_bad_top_k_is_refused_like_the_learner_does(versions: Callable[[str], Version], top_k: object) -> None:
    v = versions("mcil")
    for predictor in (v.learner, v.compiled):
        with pytest.raises(InvalidInputError) as err:
            predictor.predict(v.batch, top_k=top_k)  # type: ignore[arg-type]
        assert err.value.field == "top_k", type(predictor).__name__


INVALID_BATCHES: dict[str, tuple[Callable[[list[Sample]], list[Sample]], str]] = {
    "neither-modality": (lambda good: [Sample()], "samples[0]"),
    "neither-after-a-good-one": (lambda good: [good[0], good[1], Sample()], "samples[2]"),
    "audio-without-rate": (lambda good: [Sample(audio=good[2].audio)], "samples[0].sample_rate"),
    "no-samples": (lambda good: [], "samples"),
}


@pytest.mark.parametrize("case", list(INVALID_BATCHES))
def test_an_invalid_sample_is_refused_like_the_learner_does(versions: Callable[[str], Version], case: str) -> None:
    v = versions("mcil")
    build, field = INVALID_BATCHES[case]
    batch = build(v.batch)
    for predictor in (v.learner, v.compiled):
        with pytest.raises(InvalidInputError) as err:
            predictor.predict(batch, top_k=3)
        assert err.value.field == field, type(predictor).__name__


# -- 4. compiling leaves the learner as it was ----------------------------------------------------------
@pytest.mark.parametrize("name", list(VARIANTS))
def test_compiling_leaves_the_learner_unchanged(versions: Callable[[str], Version], name: str) -> None:
    v = versions(name)
    assert v.learner.predict(v.batch, top_k=4) == v.before
    learned = v.learner.learned_tensors()
    assert learned.keys() == v.learned_before.keys()
    assert all(torch.equal(learned[k], v.learned_before[k]) for k in learned)
    mixtures = v.learner.backbone.image.mixtures
    assert mixtures and all(isinstance(m, MixtureOfExperts) and not m.dense for m in mixtures)
    assert v.learner.backbone.image.runner is None


# -- 5. dense and sparse expert dispatch ---------------------------------------------------------------------
def test_dense_and_sparse_expert_dispatch_agree(tiny_backbone: TriModalBackbone) -> None:
    # Four experts per task, two routed per sample: the sparse path really skips experts.
    config = LearnerConfig(training=FAST.training, experts_per_task=4, head=HeadConfig(features="adapted"))
    learner = learn_tasks(Learner(copy.deepcopy(tiny_backbone), create_strategy("mcil"), config, "tiny"), TASKS[:1])
    images = learner.encode_inputs([s.only("visual") for s in make_dataset(["red", "green"], 8, seed=5)]).images
    with torch.no_grad():
        gates = learner.backbone.image.routing_weights(images)
        sparse = learner.backbone.image(images)
        frozen = learner.backbone.image.frozen_features(images)
        dense_copy = copy.deepcopy(learner)
        for mixture in dense_copy.backbone.image.mixtures:
            mixture.dense = True
        dense = dense_copy.backbone.image(images)
    assert all(g.shape[1] == 4 and bool((g == 0).any()) and bool((g > 0).any()) for g in gates)
    assert float((sparse - frozen).abs().max()) > 100 * DISPATCH_TOLERANCE  # the experts change the features
    assert float((dense - sparse).abs().max()) <= DISPATCH_TOLERANCE
    assert not any(m.dense for m in learner.backbone.image.mixtures)  # the copy's flag is its own


@pytest.mark.parametrize("swap, field_problem", [(("av", "visual"), "takes inputs"), (("visual", "audio"), "takes inputs")])
def test_a_graph_of_another_path_with_a_matching_checksum_is_refused(
        versions: Callable[[str], Version], tmp_path: Path, swap: tuple[str, str], field_problem: str) -> None:
    """Even a consistent compiled.json cannot make a graph serve a path whose inputs it does not take."""
    v = versions("mcil")
    v.compiled.write(tmp_path)
    target, source = swap
    data = (tmp_path / graph_file(source)).read_bytes()
    (tmp_path / graph_file(target)).write_bytes(data)
    _edit_meta(lambda m: m["graph_sha256"].update({target: hashlib.sha256(data).hexdigest()}))(tmp_path / META_FILE)
    with pytest.raises(CompileError) as err:
        CompiledVersion.load(tmp_path, v.learner)
    assert err.value.field == graph_file(target) and field_problem in err.value.problem
