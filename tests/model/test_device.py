"""Devices: names are checked, a missing GPU is a clear error, and a learner on a CUDA GPU learns,
predicts and saves like one on the CPU (those tests run only where PyTorch sees a CUDA GPU)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest
import torch

from model.backbone import build_backbone
from model.device import check_device_name, resolve_device
from model.errors import InvalidInputError
from model.learner import Learner, create_learner
from model.samples import LabeledSample
from tests.conftest import FAST

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here (runs on a GPU host)")


@pytest.fixture
def full_float32() -> Iterator[None]:
    """Plain float32 on the GPU (no TF32 in convolutions or matrix products) while comparing devices."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


CROSS_DEVICE_ATOL = 2e-3
"""Probabilities of the same model on the CPU and on a GPU: float32 sums in another order, scaled by
the logit scale before the softmax, differ by more than 1e-4 (seen on an H200)."""


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_names_that_are_accepted(name: str) -> None:
    check_device_name(name, "server.device")


@pytest.mark.parametrize("name", ["", "gpu", "CUDA", "cuda:", "cuda:x", "cpu:0", "mps", " cpu"])
def test_a_bad_device_name_is_an_error_naming_the_field(name: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        check_device_name(name, "server.device")
    assert info.value.field == "server.device"
    assert "auto, cpu, cuda or cuda:N" in str(info.value)


def test_auto_and_cpu_resolve_on_any_machine() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_is_an_error_not_a_silent_cpu_run() -> None:
    with pytest.raises(InvalidInputError, match="sees no CUDA GPU") as info:
        resolve_device("cuda", "--device")
    assert info.value.field == "--device"


@needs_cuda
def test_a_gpu_index_beyond_the_visible_gpus_is_an_error() -> None:
    with pytest.raises(InvalidInputError, match="CUDA GPU"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def _learn_two_tasks(strategy: str, device: str, two_tasks: dict[str, list[LabeledSample]]) -> Learner:
    learner = create_learner("tiny", strategy, backbone=build_backbone("tiny"), config=FAST, device=device)
    learner.learn_task(two_tasks["train1"], ["red", "green"])
    learner.learn_task(two_tasks["train2"], ["blue", "yellow"])
    return learner


def _probabilities(learner: Learner, samples: list[LabeledSample]) -> torch.Tensor:
    out = learner.infer(learner.encode_inputs(samples))
    return out.logits.softmax(dim=-1).cpu()


def test_a_copy_on_another_device_moves_nothing_of_the_original() -> None:
    # The "meta" device stands in for a GPU: a backbone's copies share its frozen tensors, so moving
    # a plain deepcopy would move the original's frozen tensors with it.
    backbone = build_backbone("tiny")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    moved = backbone.copy_on("meta")
    assert {t.device.type for t in (*moved.parameters(), *moved.buffers())} == {"meta"}
    assert {t.device.type for t in (*backbone.parameters(), *backbone.buffers())} == {"cpu"}
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())
    assert [n for n, p in moved.named_parameters() if p.requires_grad] == \
        [n for n, p in backbone.named_parameters() if p.requires_grad]


def test_a_learner_built_on_another_device_leaves_the_given_backbone_where_it_is() -> None:
    backbone = build_backbone("tiny")
    learner = create_learner("tiny", "mcil", backbone=backbone, device="meta")
    assert learner.device.type == "meta" and learner.prototypes.device.type == "meta"
    assert next(learner.fusion.parameters()).device.type == "meta"
    assert backbone.device.type == "cpu"


@pytest.mark.parametrize("strategy", ["mcil", "icarl", "joint", "lwf"])
def test_moving_a_learner_moves_everything_it_keeps(strategy: str, two_tasks) -> None:
    # "meta" stands in for a GPU: every tensor the learner and its strategy keep must follow.
    learner = create_learner("tiny", strategy, backbone=build_backbone("tiny"),
                             config=replace(FAST, training=replace(FAST.training, epochs=1)))
    learner.learn_task(two_tasks["train1"][:8], ["red", "green"])
    learner.to("meta")
    kept = [*learner.backbone.parameters(), *learner.backbone.buffers(), *learner.fusion.parameters(),
            learner.prototypes, *learner.strategy.state_dict().values()]
    seen = getattr(learner.strategy, "seen", None)  # joint keeps its training data in memory
    kept += [] if seen is None else [seen.images, seen.audio, seen.labels]
    assert {t.device.type for t in kept} == {"meta"}


@needs_cuda
@pytest.mark.parametrize("strategy", ["mcil", "icarl"])
def test_a_learner_on_the_gpu_learns_like_one_on_the_cpu(strategy: str, two_tasks, tmp_path: Path,
                                                         full_float32: None) -> None:
    # Same seeds, and the same CPU-drawn batches, dropout masks, router noise, replayed features and
    # initial weights: the two differ by the order of floating-point sums (and the kernels that do
    # them), compounded over two tasks of training.
    cpu = _learn_two_tasks(strategy, "cpu", two_tasks)
    gpu = _learn_two_tasks(strategy, "cuda", two_tasks)
    assert gpu.device.type == "cuda"
    assert all(t.device.type == "cuda" for t in gpu.backbone.learned_state().values())
    assert gpu.prototypes.device.type == "cuda"
    held_out = two_tasks["test1"] + two_tasks["test2"]
    p_cpu, p_gpu = _probabilities(cpu, held_out), _probabilities(gpu, held_out)
    assert (p_cpu.argmax(-1) == p_gpu.argmax(-1)).float().mean() >= 0.95
    assert (p_cpu - p_gpu).abs().max() < 0.05

    gpu.save(tmp_path / "v1")  # files hold CPU tensors: a version saved on a GPU host loads anywhere
    on_cpu = Learner.load(tmp_path / "v1", backbone=build_backbone("tiny"))
    assert on_cpu.device.type == "cpu"
    assert torch.allclose(_probabilities(on_cpu, held_out), p_gpu, atol=CROSS_DEVICE_ATOL)
    on_gpu = Learner.load(tmp_path / "v1", backbone=build_backbone("tiny").to("cuda"))
    assert on_gpu.device.type == "cuda"
    assert torch.allclose(_probabilities(on_gpu, held_out), p_gpu, atol=1e-5)
    assert [p.classes[0] for p in on_gpu.predict(held_out, top_k=1)] == \
        [p.classes[0] for p in gpu.predict(held_out, top_k=1)]


@needs_cuda
def test_moving_a_trained_learner_to_the_gpu_keeps_its_answers(two_tasks, full_float32: None) -> None:
    learner = create_learner("tiny", "mcil", backbone=build_backbone("tiny"), config=FAST)
    learner.learn_task(two_tasks["train1"], ["red", "green"])
    held_out = two_tasks["test1"]
    before = _probabilities(learner, held_out)
    learner.to("cuda")
    assert learner.device.type == "cuda"
    assert torch.allclose(_probabilities(learner, held_out), before, atol=CROSS_DEVICE_ATOL)
    learner.learn_task(two_tasks["train2"], ["blue", "yellow"])  # the new task's experts land on the GPU
    assert all(t.device.type == "cuda" for t in learner.backbone.learned_state().values())
