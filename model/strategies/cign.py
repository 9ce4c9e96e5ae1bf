"""`cign`: the class-incremental grouping network (Mo, Pian and Tian, ICCV 2023) over frozen tokens.

Per task t, on the tokens of model/strategies/token_network.py (one global audio token, P visual
tokens), with two learnable class tokens per class (one audio, one visual):

    f_a, c_a = phi_a([audio ; audio class tokens])           self-attention transformers (eq. 1-4)
    f_v, c_v = phi_v([visual tokens ; visual class tokens])
    A = assign(W_q f . W_k c)                                each token to ONE class group (eq. 6)
    g_i = c_i + W_o (sum_n A_ni W_v f_n) / sum_n A_ni        class-aware features (eq. 7)
    p_a,i = sigmoid(FC(g_a,i)),  p_v,i = sigmoid(FC(g_v,i))  per-class binary scores
    score_i = log p_a,i + log p_v,i                          the paper's product p_a * p_v, as a log

Loss (eq. 8-10), at task t with a frozen copy of the network from t - 1 as the teacher:

    KL(softmax(FC_t(c_i)) || softmax(FC_t-1(c_i)))   over old classes' tokens: class-token distillation
    CE(i, softmax(FC_t(c_i)))                          new classes' tokens classify as their class
    BCE(y, p_a) + BCE(y, p_v)                          the grouping's per-class scores
    L_ctl                                              continual grouping: each old class's group feature
                                                       of a sample stays nearest its t - 1 self, against
                                                       the new classes' groups (InfoNCE, tau 0.1)

Old classes' raw class tokens are frozen once learned (the token classifier FC, the transformers and
the grouping block keep training; the distillation keeps FC's reading of old tokens). Rehearsal (the
paper's buffer of pairs from old tasks) is ``LearnerConfig.rehearsal``, off by default: with it,
``exemplars_per_class`` training pairs per class are kept (herding) and trained on again, and the
version STORES TRAINING DATA. The choices the paper leaves open are in docs/model.md ("CIGN").
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from model.strategies.exemplars import ExemplarMemory
from model.strategies.token_network import NetworkOutput, Tokens, TokenStrategy, frozen_tokens

if TYPE_CHECKING:
    from model.batch import TaskData
    from model.learner_config import LearnerConfig
    from model.strategies.base import LearnerView

DEPTH = 3  # the paper's default depth of phi_a, phi_v
HEADS = 4
TAU = 0.1  # temperature of the continual grouping loss


def assign(logits: torch.Tensor, hard: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(B, N, C)`` token-to-group logits -> assignment weights, softmax over the C groups.

    ``hard``: each token goes to exactly one group (one-hot rows). In training the choice is a
    Gumbel-softmax draw (``generator``) and gradients flow through the soft weights (straight-through);
    otherwise it is the argmax."""
    soft = logits.softmax(dim=-1)
    if not hard:
        return soft
    if generator is not None:
        u = torch.rand(logits.shape, generator=generator).to(logits.device).clamp(1e-9, 1 - 1e-9)
        soft = (logits - torch.log(-torch.log(u))).softmax(dim=-1)
    one_hot = F.one_hot(soft.argmax(dim=-1), logits.shape[-1]).to(soft.dtype)
    if not torch.is_grad_enabled():
        return one_hot
    return one_hot + soft - soft.detach()  # the one-hot forward (to rounding), the soft gradient


class GroupingBlock(nn.Module):
    """Eq. 6-7: tokens are assigned to class tokens and merged into one feature per class."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.dim = dim

    def forward(self, features: torch.Tensor, class_tokens: torch.Tensor, hard: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``features (B, N, D)``, ``class_tokens (B, C, D)`` -> ``(groups (B, C, D), assignment (B, N, C))``."""
        logits = self.query(features) @ self.key(class_tokens).transpose(1, 2) / math.sqrt(self.dim)
        a = assign(logits, hard, generator)  # (B, N, C)
        merged = a.transpose(1, 2) @ self.value(features)  # (B, C, D)
        # (B, C, 1): how many tokens each group took. An empty group keeps its class token alone; the
        # floor of 1 (not a tiny epsilon) keeps the straight-through gradient of empty groups bounded.
        mass = a.sum(dim=1).unsqueeze(-1)
        groups = class_tokens + self.out(merged / mass.clamp_min(1.0))
        return groups, a


class CIGNNetwork(nn.Module):
    """The network of the module docstring; class tokens and the token classifier grow per task."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.audio_tokens = nn.ParameterList()  # one (n_t, D) block per task
        self.visual_tokens = nn.ParameterList()
        self.token_classifier = nn.ParameterList()  # one (n_t, D) block of FC rows per task

        def encoder() -> nn.TransformerEncoder:
            layer = nn.TransformerEncoderLayer(dim, HEADS if dim % HEADS == 0 else 1, 2 * dim, dropout=0.0,
                                               batch_first=True, norm_first=True)
            return nn.TransformerEncoder(layer, DEPTH, norm=nn.LayerNorm(dim), enable_nested_tensor=False)

        def score() -> nn.Sequential:  # normalised first: an unbounded group feature saturates the sigmoid
            return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 1))

        self.encode_audio, self.encode_visual = encoder(), encoder()
        self.group_audio, self.group_visual = GroupingBlock(dim), GroupingBlock(dim)
        self.score_audio, self.score_visual = score(), score()

    @property
    def classes(self) -> int:
        return sum(int(p.shape[0]) for p in self.audio_tokens)

    def grow(self, n: int, generator: torch.Generator) -> None:
        """Freezes every class token learned so far and adds ``n`` classes' tokens and FC rows."""
        for p in (*self.audio_tokens, *self.visual_tokens):
            p.requires_grad_(False)
        if n == 0:
            return
        device = next(self.parameters()).device
        for blocks in (self.audio_tokens, self.visual_tokens, self.token_classifier):
            blocks.append(nn.Parameter((0.02 * torch.randn(n, self.dim, generator=generator)).to(device)))

    def class_tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat(list(self.audio_tokens)), torch.cat(list(self.visual_tokens))

    def token_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """FC over class tokens ``(C', D)`` -> ``(C', C)`` logits over every class."""
        return tokens @ torch.cat(list(self.token_classifier)).T

    def forward(self, tokens: Tokens, generator: torch.Generator | None = None,
                hard: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                            torch.Tensor, torch.Tensor]:
        """``(log p_a, log p_v (B, C), groups_a, groups_v (B, C, D), f_a (B, D), f_v (B, D))``."""
        f_a, hat_ca, f_v, hat_cv = self._encode(tokens)
        g_a, _ = self.group_audio(f_a, hat_ca, hard, generator)
        g_v, _ = self.group_visual(f_v, hat_cv, hard, generator)
        log_pa = F.logsigmoid(self.score_audio(g_a).squeeze(-1))
        log_pv = F.logsigmoid(self.score_visual(g_v).squeeze(-1))
        return log_pa, log_pv, g_a, g_v, f_a.squeeze(1), f_v.mean(dim=1)

    def assignments(self, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
        """At inference, which group each token joins: ``(audio (B, 1, C), visual (B, P, C))``."""
        f_a, hat_ca, f_v, hat_cv = self._encode(tokens)
        return self.group_audio(f_a, hat_ca)[1], self.group_visual(f_v, hat_cv)[1]

    def _encode(self, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eq. 1-4: ``(f_a (B, 1, D), c_a (B, C, D), f_v (B, P, D), c_v (B, C, D))`` after self-attention."""
        ca, cv = self.class_tokens()
        b, c = len(tokens), len(ca)
        xa = self.encode_audio(torch.cat([tokens.audio.unsqueeze(1), ca.expand(b, c, self.dim)], dim=1))
        xv = self.encode_visual(torch.cat([tokens.visual, cv.expand(b, c, self.dim)], dim=1))
        p = tokens.visual.shape[1]
        return xa[:, :1], xa[:, 1:], xv[:, :p], xv[:, p:]


def class_token_distillation(student: CIGNNetwork, teacher: CIGNNetwork) -> torch.Tensor:
    """``sum_i KL(softmax(FC_t(c_i)) || softmax(FC_t-1(c_i)))`` over the teacher's classes' tokens
    (audio and visual), each distribution over the teacher's classes: zero when nothing changed."""
    n_old = teacher.classes
    total = torch.zeros(())
    for s_tokens, t_tokens in zip(student.class_tokens(), teacher.class_tokens()):
        student_log = student.token_logits(s_tokens[:n_old])[:, :n_old].log_softmax(dim=-1)
        with torch.no_grad():
            teacher_log = teacher.token_logits(t_tokens).log_softmax(dim=-1)
        total = total + F.kl_div(teacher_log, student_log, log_target=True, reduction="sum")
    return total


def continual_grouping(student_groups: torch.Tensor, teacher_groups: torch.Tensor, n_old: int) -> torch.Tensor:
    """Eq. 9: per sample, each old class's group feature at t - 1 should be nearest the same class's
    group at t, against the new classes' groups (InfoNCE over ``[own, new classes]``, ``TAU``)."""
    old = F.normalize(teacher_groups[:, :n_old], dim=-1)  # (B, n_old, D)
    current = F.normalize(student_groups, dim=-1)  # (B, C, D)
    positive = (old * current[:, :n_old]).sum(dim=-1, keepdim=True)  # (B, n_old, 1)
    negatives = old @ current[:, n_old:].transpose(1, 2)  # (B, n_old, n_new)
    logits = torch.cat([positive, negatives], dim=-1) / TAU
    return -logits.log_softmax(dim=-1)[..., 0].mean()


class CIGN(TokenStrategy):
    name = "cign"

    def __init__(self) -> None:
        super().__init__()
        self.buffer = ExemplarMemory()  # the rehearsal buffer (``LearnerConfig.rehearsal``)

    def keeps_examples(self, config: "LearnerConfig") -> bool:
        return config.rehearsal

    def build_network(self, learner: "LearnerView") -> nn.Module:
        return CIGNNetwork(learner.backbone.embed_dim)

    def grow(self, learner: "LearnerView", task_key: str, new_classes: int) -> None:
        generator = torch.Generator().manual_seed(learner.config.training.seed + len(learner.tasks))
        assert isinstance(self.network, CIGNNetwork)
        self.network.grow(new_classes, generator)

    def run_network(self, network: nn.Module, tokens: Tokens, prototypes: torch.Tensor,
                    learner: "LearnerView") -> NetworkOutput:
        assert isinstance(network, CIGNNetwork)
        log_pa, log_pv, g_a, g_v, f_a, f_v = network(tokens)
        has_v, has_a = tokens.has_image.unsqueeze(-1), tokens.has_audio.unsqueeze(-1)
        scores = torch.where(has_v, log_pv, 0.0) + torch.where(has_a, log_pa, 0.0)
        joint = torch.where(has_v & has_a, (f_a + f_v) / 2, torch.where(has_v, f_v, f_a))
        return NetworkOutput(scores, f_v, f_a, joint)

    def token_loss(self, learner: "LearnerView", tokens: Tokens, prototypes: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
        network = self.network
        loss: torch.Tensor
        assert isinstance(network, CIGNNetwork)
        log_pa, log_pv, g_a, g_v, _, _ = network(tokens, generator)
        c = log_pa.shape[1]
        y = F.one_hot(tokens.labels, c).to(log_pa.dtype)
        loss = log_pa.new_zeros(())
        for log_p, present in ((log_pa, tokens.has_audio), (log_pv, tokens.has_image)):
            if bool(present.any()):  # BCE from log-probabilities: log(1 - p) = log(-expm1(log p))
                log_not = torch.log(-torch.expm1(log_p.clamp_max(-1e-6)))
                bce = -(y * log_p + (1 - y) * log_not).sum(dim=-1)
                loss = loss + bce[present].mean()
        teacher = self.teacher
        n_old = teacher.classes if isinstance(teacher, CIGNNetwork) else 0
        for class_tokens in network.class_tokens():  # new classes' tokens name their own class
            new = torch.arange(n_old, c, device=class_tokens.device)
            if len(new):
                loss = loss + F.cross_entropy(network.token_logits(class_tokens[n_old:]), new, reduction="sum")
        if isinstance(teacher, CIGNNetwork) and n_old:
            loss = loss + class_token_distillation(network, teacher)
            if c > n_old:
                with torch.no_grad():
                    _, _, t_ga, t_gv, _, _ = teacher(tokens)
                for groups, old, present in ((g_a, t_ga, tokens.has_audio), (g_v, t_gv, tokens.has_image)):
                    if bool(present.any()):
                        loss = loss + continual_grouping(groups[present], old[present], n_old)
        return loss

    # -- rehearsal (off by default) -------------------------------------------------------------
    def training_data(self, learner: "LearnerView", data: "TaskData") -> "TaskData":
        return self.buffer.with_task(data)

    def stored_examples(self) -> int:
        return len(self.buffer)

    def after_task(self, learner: "LearnerView", task_key: str, data: "TaskData") -> None:
        super().after_task(learner, task_key, data)
        if learner.config.rehearsal:
            tokens = self.project(learner, frozen_tokens(learner.backbone, data))
            pooled = torch.cat([tokens.visual.mean(dim=1), tokens.audio], dim=-1)
            self.buffer.keep(data, pooled, learner.config.exemplars_per_class)

    def to(self, device: torch.device) -> None:
        super().to(device)
        self.buffer.to(device)

    # -- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**super().state_dict(), **self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        tensors = self.network_state(state)
        blocks = sorted({int(k.split(".")[1]) for k in tensors if k.startswith("audio_tokens.")})
        dim = int(tensors["score_audio.1.weight"].shape[1])
        network = CIGNNetwork(dim)
        for i in blocks:
            for name in ("audio_tokens", "visual_tokens", "token_classifier"):
                getattr(network, name).append(nn.Parameter(torch.zeros_like(tensors[f"{name}.{i}"])))
        try:
            network.load_state_dict(tensors)
        except RuntimeError as exc:
            raise ValueError(f"strategy cign: saved network does not fit: {exc}") from None
        network.grow(0, torch.Generator())  # learned class tokens are frozen
        self.network = network.eval()
        self.buffer.load_state_dict(state, "cign", required=False)
