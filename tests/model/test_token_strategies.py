"""`cign` and `mmcl`: each paper's defining mechanism, tested directly on the tiny preset."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from model.backbone import build_backbone
from model.heads import HeadConfig
from model.learner import Learner
from model.strategies.cign import CIGNNetwork, assign, class_token_distillation
from model.strategies.mmcl import MMCLNetwork, logit_distillation, preservation
from model.strategies.token_network import frozen_tokens
from tests.conftest import FAST

pytestmark = pytest.mark.usefixtures("one_torch_thread")
QUICK = replace(FAST, training=replace(FAST.training, epochs=3), exemplars_per_class=4)


def _two_tasks(make_learner, two_tasks, strategy: str, config=QUICK) -> tuple[Learner, dict[str, torch.Tensor]]:
    """A learner after one task, the state of its network then, and the same learner after a second."""
    learner = make_learner(strategy, config=config)
    learner.learn_task(two_tasks["train1"], ["red", "green"])
    before = {k: v.clone() for k, v in learner.strategy.network.state_dict().items()}
    learner.learn_task(two_tasks["train2"], ["blue", "yellow"])
    return learner, before


def test_cign_keeps_old_class_tokens_bit_identical(make_learner, two_tasks) -> None:
    learner, before = _two_tasks(make_learner, two_tasks, "cign")
    after = learner.strategy.network.state_dict()
    for name in ("audio_tokens.0", "visual_tokens.0"):
        assert torch.equal(before[name], after[name])  # frozen once learned
    assert after["audio_tokens.1"].shape == (2, learner.backbone.embed_dim)
    moved = [k for k in before if k.startswith("encode_audio") and not torch.equal(before[k], after[k])]
    assert moved, "the shared transformers train on with every task"


def test_cign_token_distillation_is_zero_when_nothing_changed_and_grows_when_it_does(make_learner,
                                                                                      two_tasks) -> None:
    learner, _ = _two_tasks(make_learner, two_tasks, "cign")
    network = learner.strategy.network
    same = class_token_distillation(network, copy.deepcopy(network))
    assert float(same.detach()) == 0.0
    changed = copy.deepcopy(network)
    with torch.no_grad():
        changed.token_classifier[0].add_(torch.randn_like(changed.token_classifier[0]))
    assert float(class_token_distillation(changed, network).detach()) > 1e-3


def test_cign_grouping_assigns_each_token_to_exactly_one_group(make_learner, two_tasks) -> None:
    learner, _ = _two_tasks(make_learner, two_tasks, "cign")
    batch = learner.encode_inputs([s.only("av") for s in two_tasks["test1"][:5]])
    tokens = learner.strategy.project(learner, frozen_tokens(learner.backbone, batch))
    with torch.no_grad():
        audio, visual = learner.strategy.network.assignments(tokens)
    for a in (audio, visual):
        assert a.shape[-1] == 4  # a group per class learned
        assert torch.equal(a.sum(dim=-1), torch.ones(a.shape[:-1]))  # rows sum to one ...
        assert torch.equal((a == 1).sum(dim=-1), torch.ones(a.shape[:-1], dtype=torch.long))  # ... one-hot
    logits = torch.randn(3, 7, 4)
    with torch.no_grad():  # training's Gumbel draw, without the straight-through term
        drawn = assign(logits, hard=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal((drawn == 1).sum(-1), torch.ones(3, 7, dtype=torch.long))


def test_cign_rehearsal_stores_pairs_and_round_trips(make_learner, two_tasks, tmp_path: Path) -> None:
    learner, _ = _two_tasks(make_learner, two_tasks, "cign", replace(QUICK, rehearsal=True))
    assert learner.keeps_exemplars and learner.strategy.buffer.batch.labels.bincount().tolist() == [4, 4, 4, 4]
    learner.save(tmp_path)
    loaded = Learner.load(tmp_path, backbone=build_backbone("tiny"))
    assert loaded.keeps_exemplars and torch.equal(loaded.strategy.buffer.batch.labels, learner.strategy.buffer.batch.labels)
    assert not make_learner("cign", config=QUICK).keeps_exemplars  # off by default


def test_mmcl_keeps_old_experts_and_gate_rows_bit_identical(make_learner, two_tasks) -> None:
    learner, before = _two_tasks(make_learner, two_tasks, "mmcl")
    after = learner.strategy.network.state_dict()
    old = [k for k in before if k.startswith(("experts.", "gates."))]
    assert old and all(torch.equal(before[k], after[k]) for k in old)
    assert len(learner.strategy.network.experts) == 2 * QUICK.experts_per_task
    assert not torch.equal(before["joint.weight"], after["joint.weight"])  # the joint map trains on


def test_mmcl_distillation_and_preservation_are_zero_when_nothing_changed() -> None:
    logits, joint = torch.randn(6, 4), torch.randn(6, 8)
    assert float(logit_distillation(logits, logits.clone())) == 0.0
    assert float(preservation(joint, joint.clone())) == 0.0
    assert float(logit_distillation(logits, logits.flip(0))) > 0 and float(preservation(joint, joint.flip(1))) > 0


def test_mmcl_experts_read_both_modalities() -> None:
    network = MMCLNetwork(8)
    network.add_task(2, torch.Generator().manual_seed(0))
    expert = network.experts[0]
    torch.nn.init.normal_(expert.up_visual.weight)
    torch.nn.init.normal_(expert.up_audio.weight)
    visual, audio = torch.randn(3, 5, 8), torch.randn(3, 8)
    dv, da = expert(visual, audio)
    dv2, da2 = expert(visual, audio + 1.0)
    dv3, da3 = expert(visual + 1.0, audio)
    assert not torch.allclose(dv, dv2) and not torch.allclose(da, da3)  # each update reads the other modality


@pytest.mark.parametrize("strategy", ["cign", "mmcl"])
def test_either_head_serves_and_round_trips(strategy: str, make_learner, two_tasks, tmp_path: Path) -> None:
    for kind in ("prototypes", "analytic"):
        learner = make_learner(strategy, config=replace(QUICK, head=HeadConfig(kind=kind)))
        learner.learn_task(two_tasks["train1"], ["red", "green"])
        learner.learn_task(two_tasks["train2"], ["blue", "yellow"])
        assert (learner.head is None) == (kind == "prototypes")
        samples = [s.only(p) for s in two_tasks["test2"][:4] for p in ("av", "visual", "audio")]
        scores = learner.infer(learner.encode_inputs(samples)).logits
        learner.save(tmp_path / kind)
        loaded = Learner.load(tmp_path / kind, backbone=build_backbone("tiny"))
        assert torch.equal(loaded.infer(loaded.encode_inputs(samples)).logits, scores)
    from export.served_graphs import compile_problem

    assert "network of its own" in compile_problem(learner)  # served on the hybrid path, never as graphs


def test_a_damaged_network_file_is_refused_by_name(make_learner, two_tasks, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from model.errors import CheckpointError

    learner = make_learner("cign", config=QUICK)
    learner.learn_task(two_tasks["train1"], ["red", "green"])
    learner.save(tmp_path)
    state = load_file(str(tmp_path / "strategy.safetensors"))
    save_file({k: v for k, v in state.items() if not k.startswith("means.")}, str(tmp_path / "strategy.safetensors"))
    with pytest.raises(CheckpointError, match="strategy.safetensors"):
        Learner.load(tmp_path, backbone=build_backbone("tiny"))


def test_cign_network_is_what_the_paper_draws() -> None:
    network = CIGNNetwork(8)
    network.grow(3, torch.Generator().manual_seed(0))
    assert network.classes == 3 and len(network.encode_audio.layers) == 3  # the paper's depth
