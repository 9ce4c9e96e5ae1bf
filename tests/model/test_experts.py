"""MIFE experts: start as a no-op, route per sample, no noise at inference, freeze per task, and
task keys that tell tasks apart by their spread."""

from __future__ import annotations

import pytest
import torch

from model.experts import ExpertConfig, MixtureOfExperts, RouterConfig, TaskKey, lora_expert_factory


def make_moe(noise: float = 0.1) -> MixtureOfExperts:
    torch.manual_seed(0)
    return MixtureOfExperts(16, lora_expert_factory(ExpertConfig(bottleneck=8, rank=4)),
                            RouterConfig(hidden=8, top_k=2, train_noise=noise))


def test_no_experts_adds_nothing() -> None:
    h = torch.randn(3, 5, 16)
    assert torch.equal(make_moe()(h), torch.zeros_like(h))


def test_new_experts_start_as_no_op() -> None:
    moe = make_moe()
    moe.add_task("task1", 3)
    assert torch.equal(moe(torch.randn(4, 5, 16)), torch.zeros(4, 5, 16))


def test_routing_is_per_sample_within_one_batch() -> None:
    moe = make_moe().eval()
    moe.add_task("task1", 4)
    h = torch.randn(32, 5, 16) * torch.linspace(0.5, 3, 32).view(32, 1, 1)
    gates = moe.gates(h)  # (B, E)
    assert gates.shape == (32, 4)
    assert torch.allclose(gates.sum(dim=1), torch.ones(32))
    assert ((gates > 0).sum(dim=1) == 2).all()  # top-2 per sample
    chosen = {tuple((row > 0).nonzero().flatten().tolist()) for row in gates}
    assert len(chosen) > 1, "every sample got the same experts: routing is per batch"


def test_gating_noise_only_in_training() -> None:
    moe = make_moe(noise=1.0)
    moe.add_task("task1", 4)
    h = torch.randn(8, 5, 16)
    moe.eval()
    assert torch.equal(moe.gates(h), moe.gates(h))
    moe.train()
    assert not torch.equal(moe.gates(h), moe.gates(h))


def test_freeze_task_freezes_its_experts_and_head_only() -> None:
    moe = make_moe()
    moe.add_task("task1", 2)
    moe.freeze_task("task1")
    moe.add_task("task2", 2)
    trainable = {n for n, p in moe.named_parameters() if p.requires_grad}
    assert trainable and all("task2" in n for n in trainable), trainable


def two_tasks_one_dimension_apart(distance: str) -> tuple[TaskKey, TaskKey, torch.Tensor]:
    """Keys of two tasks whose inputs differ only in dimension 0, where each task varies little;
    and fresh inputs of the first task."""
    torch.manual_seed(0)

    def inputs(shift: float) -> torch.Tensor:
        u = torch.randn(256, 64)
        u[:, 0] = shift + 0.05 * torch.randn(256)
        return u

    first, second = TaskKey(64, distance), TaskKey(64, distance)
    first.update(inputs(0.0))
    second.update(inputs(0.5))
    return first, second, inputs(0.0)


def test_gaussian_task_distance_tells_close_tasks_apart() -> None:
    first, second, u = two_tasks_one_dimension_apart("gaussian")
    margin = second.distance(u) - first.distance(u)  # (B, 1): > 0 prefers the right task
    assert (margin > 0).all()
    assert margin.mean() > 0.5  # x task_prior (5): a clear preference in logits


def test_euclidean_task_distance_ignores_spread() -> None:
    first, second, u = two_tasks_one_dimension_apart("euclidean")
    margin = second.distance(u) - first.distance(u)
    assert margin.mean().abs() < 0.01  # 0.25 / 64 on average: the router barely sees it


def test_task_distance_is_validated() -> None:
    with pytest.raises(ValueError, match="task_distance"):
        RouterConfig(task_distance="cosine")
