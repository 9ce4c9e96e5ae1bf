"""`mmcl`: cross-modality adapters with representation alignment and knowledge preservation (Chee,
Hsu and Lee, 2025), over the frozen tokens of model/strategies/token_network.py.

    v0 = mean_p V,  a0 = a                                      the frozen encoders' features
    w  = top-k softmax(W_g [v0 ; a0])                           the gate, over every task's experts
    v  = v0 + sum_k w_k dv_k,  a = a0 + sum_k w_k da_k          experts that read both modalities
    j  = J [v ; a]                                              the joint representation
    scores = s * cos(j, text prototypes)                        (or a statistics head over v, a, j)

A cross-modality expert (``CrossModalExpert``) down-projects each modality with its own weights;
the audio token then queries the visual tokens (an attention map over the image's locations from
the other modality's feature), and each modality's update reads the other's:

    h_v = GELU(V D_v) (B, P, r),  h_a = GELU(a D_a) (B, r)
    s   = softmax((h_a Q)(h_v K)^T / sqrt(r)) h_v              audio-guided summary of the image
    dv  = U_v s,  da = U_a (h_a * sigmoid(s))                  U zero-initialised: a new expert adds 0

Every task adds ``experts_per_task`` experts and gate rows; those of earlier tasks are frozen. The
joint map J trains with every task. Loss, with a frozen copy of the network from t - 1 as teacher:

    L = CE(scores, y)                                          classification
      + sqrt(t) * KD(old classes' scores, teacher's)           logit distillation, scaled by sqrt(t)
      + InfoNCE(v, j) + InfoNCE(a, j)                          alignment of each modality with the joint
      + || R(j) - R_t-1(j) ||^2                                preservation of representation
                                                               relationships (R: the batch's cosine
                                                               similarity matrix)

The paper's summary gives the components, not their equations: the choices made here are in
docs/model.md ("MMCL").
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from model.strategies.token_network import NetworkOutput, Tokens, TokenStrategy

if TYPE_CHECKING:
    from model.strategies.base import LearnerView

RANK = 64  # the experts' bottleneck width r
TOP_K = 2  # experts each sample uses
TAU = 0.1  # alignment temperature
KD_TEMPERATURE = 2.0


class CrossModalExpert(nn.Module):
    """One expert reading both modalities (see the module docstring)."""

    def __init__(self, dim: int, rank: int = RANK) -> None:
        super().__init__()
        self.down_visual, self.down_audio = nn.Linear(dim, rank), nn.Linear(dim, rank)
        self.query, self.key = nn.Linear(rank, rank, bias=False), nn.Linear(rank, rank, bias=False)
        self.up_visual, self.up_audio = nn.Linear(rank, dim), nn.Linear(rank, dim)
        for up in (self.up_visual, self.up_audio):
            nn.init.zeros_(up.weight)
            nn.init.zeros_(up.bias)
        self.rank = rank

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``visual (B, P, D)``, ``audio (B, D)`` -> ``(dv (B, D), da (B, D))``."""
        h_v, h_a = F.gelu(self.down_visual(visual)), F.gelu(self.down_audio(audio))
        attention = (self.query(h_a).unsqueeze(1) @ self.key(h_v).transpose(1, 2) / math.sqrt(self.rank))
        summary = (attention.softmax(dim=-1) @ h_v).squeeze(1)  # (B, r)
        return self.up_visual(summary), self.up_audio(h_a * torch.sigmoid(summary))


class MMCLNetwork(nn.Module):
    """Gate, per-task experts (old ones frozen) and the joint map."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.experts = nn.ModuleList()
        self.gates = nn.ModuleList()  # one Linear(2D, n_t) per task: that task's experts' gate rows
        self.joint = nn.Linear(2 * dim, dim)
        with torch.no_grad():  # starts as the average of the two modalities
            eye = torch.eye(dim) / 2
            self.joint.weight.copy_(torch.cat([eye, eye], dim=1))
            self.joint.bias.zero_()

    def add_task(self, n_experts: int, generator: torch.Generator) -> None:
        """Freezes every expert and gate row so far, then adds a task's ``n_experts`` experts."""
        for module in (*self.experts, *self.gates):
            module.requires_grad_(False)
        device = self.joint.weight.device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            self.experts.extend(CrossModalExpert(self.dim).to(device) for _ in range(n_experts))
            self.gates.append(nn.Linear(2 * self.dim, n_experts).to(device))

    def gate(self, v0: torch.Tensor, a0: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` weights over every expert: softmax of the gate's scores, zero outside the top-k."""
        logits = torch.cat([g(torch.cat([v0, a0], dim=-1)) for g in self.gates], dim=-1)
        k = min(TOP_K, logits.shape[-1])
        top = logits.topk(k, dim=-1)
        return torch.zeros_like(logits).scatter(-1, top.indices, top.values.softmax(dim=-1))

    def forward(self, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(v, a, joint)``, each ``(B, D)``; the joint is the present modality's feature for a sample
        with one input."""
        v0, a0 = tokens.visual.mean(dim=1), tokens.audio
        v, a = v0, a0
        if len(self.experts):
            weights = self.gate(v0, a0)  # (B, K)
            for k, expert in enumerate(self.experts):
                dv, da = expert(tokens.visual, tokens.audio)
                v = v + weights[:, k:k + 1] * dv
                a = a + weights[:, k:k + 1] * da
        has_v, has_a = tokens.has_image.unsqueeze(-1), tokens.has_audio.unsqueeze(-1)
        joint = torch.where(has_v & has_a, self.joint(torch.cat([v, a], dim=-1)), torch.where(has_v, v, a))
        return v, a, joint


def logit_distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float = KD_TEMPERATURE) -> torch.Tensor:
    """KL(teacher || student) of softened distributions, scaled by T^2: exactly 0 when they agree."""
    return F.kl_div((student / temperature).log_softmax(dim=-1), (teacher / temperature).log_softmax(dim=-1),
                    log_target=True, reduction="batchmean") * temperature ** 2


def alignment(modality: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
    """InfoNCE: each sample's modality feature picks out its own joint feature among the batch's."""
    logits = F.normalize(modality, dim=-1) @ F.normalize(joint, dim=-1).T / TAU
    return F.cross_entropy(logits, torch.arange(len(modality), device=modality.device))


def relations(features: torch.Tensor) -> torch.Tensor:
    """The batch's cosine similarity matrix ``(B, B)``."""
    unit = F.normalize(features, dim=-1)
    return unit @ unit.T


def preservation(student_joint: torch.Tensor, teacher_joint: torch.Tensor) -> torch.Tensor:
    """Mean squared change of the representation relationships: exactly 0 when nothing changed."""
    return (relations(student_joint) - relations(teacher_joint)).pow(2).mean()


class MMCL(TokenStrategy):
    name = "mmcl"

    def build_network(self, learner: "LearnerView") -> nn.Module:
        return MMCLNetwork(learner.backbone.embed_dim)

    def grow(self, learner: "LearnerView", task_key: str, new_classes: int) -> None:
        assert isinstance(self.network, MMCLNetwork)
        generator = torch.Generator().manual_seed(learner.config.training.seed + len(learner.tasks))
        self.network.add_task(learner.config.experts_per_task, generator)

    def run_network(self, network: nn.Module, tokens: Tokens, prototypes: torch.Tensor,
                    learner: "LearnerView") -> NetworkOutput:
        v, a, joint = network(tokens)
        scores = learner.logit_scale * F.normalize(joint, dim=-1) @ prototypes.T
        return NetworkOutput(scores, v, a, joint)

    def token_loss(self, learner: "LearnerView", tokens: Tokens, prototypes: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
        assert self.network is not None
        out = self.run_network(self.network, tokens, prototypes, learner)
        loss = F.cross_entropy(out.scores, tokens.labels)
        both = tokens.has_image & tokens.has_audio
        if int(both.sum()) > 1:
            loss = loss + alignment(out.visual[both], out.joint[both]) + alignment(out.audio[both], out.joint[both])
        if self.teacher is not None:
            n_old = len(learner.classes)
            with torch.no_grad():
                old = self.run_network(self.teacher, tokens, prototypes[:n_old], learner)
            t = len(learner.tasks) + 1
            loss = loss + math.sqrt(t) * logit_distillation(out.scores[:, :n_old], old.scores)
            loss = loss + preservation(out.joint, old.joint)
        return loss

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        tensors = self.network_state(state)
        dim = int(tensors["joint.weight"].shape[0])
        network = MMCLNetwork(dim)
        for i in sorted({int(k.split(".")[1]) for k in tensors if k.startswith("gates.")}):
            network.add_task(int(tensors[f"gates.{i}.weight"].shape[0]), torch.Generator().manual_seed(0))
        try:
            network.load_state_dict(tensors)
        except RuntimeError as exc:
            raise ValueError(f"strategy mmcl: saved network does not fit: {exc}") from None
        for module in (*network.experts, *network.gates):  # every learned task's experts are frozen
            module.requires_grad_(False)
        self.network = network.eval()
