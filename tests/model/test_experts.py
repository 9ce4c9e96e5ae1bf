"""MIFE experts: start as a no-op, route per sample, no noise at inference, freeze per task."""

from __future__ import annotations

import torch

from model.experts import ExpertConfig, MixtureOfExperts, RouterConfig, lora_expert_factory


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
