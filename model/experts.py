"""MIFE: the mixture of LoRA-decomposed bottleneck experts that sits parallel to each frozen block.

One :class:`MixtureOfExperts` per block. Experts live in a ``ModuleDict`` keyed ``"<task>_<i>"``;
the router keeps one gate head and one task key per task in other ``ModuleDict``s, so learning a
task adds keys and never edits existing tensors:

    u     = layer_norm(pool(h))                                  # (B, D): one vector per sample
    logit = head_t(mlp(u)) - task_prior * d(u, key_t)            # per task t, for its experts
    gates = top_k(softmax(logits))                               # (B, E): per-sample routing
    out   = sum_e gates[:, e] * expert_e(h)                      # only routed experts run

Rule for freezing: a parameter is trainable only during the task that created it. The router's
norm and hidden layer are created with the first task; each later task adds experts, a gate head
and a task key (running mean and variance of ``u`` over its training inputs). Old experts, heads and
keys stay bit-for-bit identical after later tasks. The key term steers a sample towards the experts
of the task whose inputs it resembles, since a new task's gate head is trained on new inputs only.
``d`` is the mean per-dimension Gaussian negative log-likelihood under the task's key. A plain
squared distance to the key's mean (``task_distance="euclidean"``) was too weak on AV-MNIST, where
every task is handwritten digits: switching task 2's experts off raised old visual accuracy from 55%
to 93% in ``python -m bench.probe``. The Gaussian distance lowered forgetting on validation data
from 30.1 to 23.9 points (T = 5, seed 0; ab927db:docs/benchmarks.md).

An expert is a bottleneck adapter ``up(act(down(h)))`` whose two projections are each factored as a
rank-``r`` product (LoRA), with the last factor zero-initialised so a new expert starts as a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, cast

import torch
from torch import nn
from torch.nn import functional as F

from model.errors import StateError


@dataclass(frozen=True)
class ExpertConfig:
    """Shape of one expert. ``bottleneck`` is the adapter's inner width, ``rank`` its LoRA rank."""

    bottleneck: int = 64
    rank: int = 8
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.bottleneck < 1:
            raise ValueError(f"bottleneck: must be >= 1, got {self.bottleneck}")
        if self.rank < 1:
            raise ValueError(f"rank: must be >= 1, got {self.rank}")


@dataclass(frozen=True)
class RouterConfig:
    """Routing. ``top_k`` experts per sample; Gaussian ``train_noise`` on logits in training only;
    ``task_prior`` weighs how strongly a sample prefers the experts of tasks whose inputs it resembles,
    measured by ``task_distance`` (see :class:`TaskKey`)."""

    hidden: int = 32
    top_k: int = 2
    train_noise: float = 0.1
    task_prior: float = 5.0
    task_distance: Literal["gaussian", "euclidean"] = "gaussian"

    def __post_init__(self) -> None:
        if self.hidden < 1:
            raise ValueError(f"hidden: must be >= 1, got {self.hidden}")
        if self.top_k < 1:
            raise ValueError(f"top_k: must be >= 1, got {self.top_k}")
        if self.train_noise < 0:
            raise ValueError(f"train_noise: must be >= 0, got {self.train_noise}")
        if self.task_prior < 0:
            raise ValueError(f"task_prior: must be >= 0, got {self.task_prior}")
        if self.task_distance not in ("gaussian", "euclidean"):
            raise ValueError(f"task_distance: 'gaussian' or 'euclidean', got {self.task_distance!r}")


ExpertFactory = Callable[[int], nn.Module]
"""Builds one expert for an adapter input of the given width."""


class LoRAExpert(nn.Module):
    """Bottleneck adapter over the last dimension of ``h`` (tokens): ``(B, N, D) -> (B, N, D)``."""

    def __init__(self, width: int, config: ExpertConfig) -> None:
        super().__init__()
        r, m = config.rank, config.bottleneck
        self.down_a = nn.Linear(width, r, bias=False)
        self.down_b = nn.Linear(r, m)
        self.up_a = nn.Linear(m, r, bias=False)
        self.up_b = nn.Linear(r, width)
        self.scale = config.scale
        nn.init.zeros_(self.up_b.weight)
        nn.init.zeros_(self.up_b.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = F.gelu(self.down_b(self.down_a(h)))  # (B, N, m)
        out: torch.Tensor = self.scale * self.up_b(self.up_a(z))  # (B, N, D)
        return out


def lora_expert_factory(config: ExpertConfig) -> ExpertFactory:
    return lambda width: LoRAExpert(width, config)


def pool_for_routing(h: torch.Tensor) -> torch.Tensor:
    """One vector per sample: the mean over tokens ``(B, N, D)`` or over space ``(B, C, H, W)``."""
    if h.dim() == 3:
        return h.mean(dim=1)
    if h.dim() == 4:
        return h.mean(dim=(2, 3))
    if h.dim() == 2:
        return h
    raise ValueError(f"h: expected 2, 3 or 4 dimensions, got shape {tuple(h.shape)}")


class TaskKey(nn.Module):
    """Where a task's inputs sit in routing space: running mean and per-dimension variance of the
    router's normalised input, updated only while its task trains and frozen with it (buffers, saved
    with the version).

    ``distance`` is either ``gaussian``, the negative log-likelihood of ``u`` under the task's
    diagonal Gaussian averaged over dimensions (dimensions where the task's inputs barely vary weigh
    most, so tasks whose means lie close together are still told apart), or ``euclidean``, the mean
    squared distance to the mean (spread ignored).
    """

    EPS = 1e-4
    mean: torch.Tensor
    var: torch.Tensor
    seen: torch.Tensor

    def __init__(self, width: int, distance: str = "gaussian", momentum: float = 0.9) -> None:
        super().__init__()
        self.kind = distance
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("var", torch.ones(width))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, u: torch.Tensor) -> None:
        batch_mean = u.mean(dim=0)
        batch_var = u.var(dim=0, unbiased=False)
        if int(self.seen) == 0:
            self.mean.copy_(batch_mean)
            self.var.copy_(batch_var)
        else:
            self.mean.mul_(self.momentum).add_(batch_mean, alpha=1 - self.momentum)
            self.var.mul_(self.momentum).add_(batch_var, alpha=1 - self.momentum)
        self.seen.add_(u.shape[0])

    def distance(self, u: torch.Tensor) -> torch.Tensor:
        """Distance of each row of ``u (B, width)`` to the task: ``(B, 1)``."""
        squared = (u - self.mean).pow(2)
        if self.kind == "euclidean":
            return squared.mean(dim=-1, keepdim=True)
        var = self.var + self.EPS
        return 0.5 * (squared / var + var.log()).mean(dim=-1, keepdim=True)


class Router(nn.Module):
    """A small MLP ``width -> hidden -> (one gate head per task)``, giving logits ``(B, E)``.

    With ``task_prior > 0`` each task's logits are lowered by ``task_prior`` times the distance of
    the sample to that task's key, so a sample is routed mostly to the experts of the task whose
    inputs it resembles; the gate heads refine the choice among them.
    """

    def __init__(self, width: int, config: RouterConfig) -> None:
        super().__init__()
        self.config = config
        self.norm = nn.LayerNorm(width)
        self.hidden = nn.Sequential(nn.Linear(width, config.hidden), nn.GELU())
        self.heads = nn.ModuleDict()
        self.keys = nn.ModuleDict()

    def add_task(self, task_key: str, n_experts: int) -> None:
        # Initialised on the CPU (the same random draws wherever the router lives), then moved to it.
        device = self.norm.weight.device
        self.heads[task_key] = nn.Linear(self.config.hidden, n_experts).to(device)
        self.keys[task_key] = TaskKey(self.norm.normalized_shape[0], self.config.task_distance).to(device)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        u = self.norm(pooled)  # (B, width)
        z = self.hidden(u)  # (B, hidden)
        logits = []
        for task, head in self.heads.items():
            key = cast(TaskKey, self.keys[task])
            if self.training and head.weight.requires_grad:
                key.update(u.detach())  # the task being learned tracks where its inputs are
            task_logits = head(z)  # (B, n_t)
            if self.config.task_prior > 0:
                # A key that has seen no input yet adds nothing. A tensor factor rather than a Python
                # test on ``seen``, so the router exports as one graph (export/compiled.py).
                known = (key.seen > 0).to(u.dtype)
                task_logits = task_logits - self.config.task_prior * known * key.distance(u)
            logits.append(task_logits)
        return torch.cat(logits, dim=-1)  # (B, E)


class MixtureOfExperts(nn.Module):
    """All experts of one block and their router. With no experts yet, the output is zero."""

    def __init__(self, width: int, expert_factory: ExpertFactory, router: RouterConfig) -> None:
        super().__init__()
        self.width = width
        self.expert_factory = expert_factory
        self.experts = nn.ModuleDict()
        self.router = Router(width, router)
        self.task_keys: list[str] = []
        # ``dense``: every expert runs on every sample and the gates (zero off the top-k) weigh them;
        # the same sums as routing, with no data-dependent shapes, for the exported graphs.
        self.dense = False

    @property
    def n_experts(self) -> int:
        return len(self.experts)

    def add_task(self, task_key: str, n_experts: int) -> None:
        """Adds ``n_experts`` trainable experts and a gate head for them; freezes nothing by itself."""
        if task_key in self.task_keys:
            raise StateError(f"task {task_key!r} already has experts")
        if n_experts < 1:
            raise ValueError(f"n_experts: must be >= 1, got {n_experts}")
        if not self.task_keys:
            self.router.norm.requires_grad_(True)
            self.router.hidden.requires_grad_(True)
        device = self.router.norm.weight.device
        for i in range(n_experts):  # initialised on the CPU, then moved to where the mixture lives
            self.experts[f"{task_key}_{i}"] = self.expert_factory(self.width).to(device)
        self.router.add_task(task_key, n_experts)
        self.task_keys.append(task_key)

    def freeze_task(self, task_key: str) -> None:
        """Freezes everything ``task_key`` created: its experts, its gate head, and (first task) the
        router's hidden layer."""
        if task_key not in self.task_keys:
            raise StateError(f"task {task_key!r} has no experts")
        for key, expert in self.experts.items():
            if key.rsplit("_", 1)[0] == task_key:
                expert.requires_grad_(False)
        self.router.heads[task_key].requires_grad_(False)
        self.router.norm.requires_grad_(False)
        self.router.hidden.requires_grad_(False)

    def gates(self, h: torch.Tensor) -> torch.Tensor:
        """Sparse per-sample gate weights ``(B, E)``; each row sums to 1 over its top-k experts."""
        logits = self.router(pool_for_routing(h))  # (B, E)
        if self.training and self.router.config.train_noise > 0:
            # Drawn on the CPU (the same draws wherever the router lives), then moved to it.
            noise = torch.randn(logits.shape, dtype=logits.dtype).to(logits.device)
            logits = logits + noise * self.router.config.train_noise
        k = min(self.router.config.top_k, logits.shape[-1])
        top_vals, top_idx = logits.topk(k, dim=-1)  # (B, k)
        return torch.zeros_like(logits).scatter(-1, top_idx, top_vals.softmax(dim=-1))

    def forward(
        self, h: torch.Tensor, return_gates: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if not self.experts:
            zero = torch.zeros_like(h)
            return (zero, h.new_zeros(h.shape[0], 0)) if return_gates else zero
        g = self.gates(h)  # (B, E)
        if self.dense:
            outs = [expert(h) for expert in self.experts.values()]
            dense = sum(g[:, e].view(-1, *([1] * (o.dim() - 1))) * o for e, o in enumerate(outs))
            return (cast(torch.Tensor, dense), g) if return_gates else cast(torch.Tensor, dense)
        mixed: torch.Tensor | None = None
        for e, expert in enumerate(self.experts.values()):
            rows = g[:, e].nonzero().flatten()  # only the samples routed to this expert
            if len(rows) == 0:
                continue
            out = expert(h[rows])  # (b, ...)
            weight = g[rows, e].view(-1, *([1] * (out.dim() - 1)))
            if mixed is None:
                mixed = out.new_zeros(h.shape[0], *out.shape[1:])
            mixed = mixed.index_add(0, rows, weight * out)
        assert mixed is not None  # every sample has top_k >= 1 experts
        return (mixed, g) if return_gates else mixed
