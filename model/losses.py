"""The MCIL training loss (paper eq. 3-9) and the distillation term the LwF/iCaRL baselines use.

    L    = a * L_CW + (1 - a) * L_MI                     a = 0.7
    L_CW = 1/n sum_i ( 1/n sum_j w_ij ) * CE_i          w_ij = (cos(v_i, v_j) + 1) / 2   (eq. 4-5)
    L_MI = -I(f; v) - I(f; a)                            (eq. 6-8)

Reading of eq. 5: the paper writes ``1/n sum_i 1/n sum_j w_ij * L_CE`` without saying which samples
L_CE compares; we take L_CE as sample i's cross-entropy, so w_ij re-weights each sample by how close
its visual feature is to the rest of the batch. The weights are treated as constants (no gradient).

Mutual information estimator: InfoNCE (van den Oord et al., 2018), ``I(X; Y) >= log n - L_NCE``.
Over a batch, each fused feature must pick out its own sample's visual (audio) feature among the n
in the batch by cosine similarity at temperature tau. Why InfoNCE: both features already live in one
embedding space, so the critic is the same cosine similarity the classifier uses and needs no extra
network; it is a lower bound with low variance at small batch sizes (MINE's is high-variance), and
it is the estimator CLIP-style models are trained with. The audio term compares ``f`` with the
projected audio feature ``P(F_a(a))`` (same space as ``f``) rather than the raw 1024-d ``F_a(a)``.
Samples missing a modality are left out of that modality's term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class LossConfig:
    """``kind="mcil"``: eq. 9; ``kind="cross_entropy"``: plain cross-entropy (the ablation)."""

    kind: str = "mcil"
    alpha: float = 0.7
    mi_temperature: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in ("mcil", "cross_entropy"):
            raise ValueError(f"kind: 'mcil' or 'cross_entropy', got {self.kind!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha: must lie in [0, 1], got {self.alpha}")
        if self.mi_temperature <= 0:
            raise ValueError(f"mi_temperature: must be > 0, got {self.mi_temperature}")


def similarity_weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, visual: torch.Tensor, has_visual: torch.Tensor
) -> torch.Tensor:
    """L_CW (eq. 4-5). ``logits (B, C)``, ``labels (B,)``, ``visual (B, E)``, ``has_visual (B,)``."""
    ce = F.cross_entropy(logits, labels, reduction="none")  # (B,)
    with torch.no_grad():
        weight = torch.ones_like(ce)
        if has_visual.sum() > 1:
            v = F.normalize(visual[has_visual], dim=-1)  # (n, E)
            w = (v @ v.T + 1) / 2  # (n, n) in [0, 1]
            weight[has_visual] = w.mean(dim=1)
    return (weight * ce).mean()


def info_nce(x: torch.Tensor, y: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE loss between paired rows of ``x`` and ``y`` (each ``(n, E)``); = -I + log n."""
    if x.shape[0] < 2:
        return x.new_zeros(())
    logits = F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T / temperature  # (n, n)
    target = torch.arange(x.shape[0], device=x.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def mutual_information_loss(
    fused: torch.Tensor,
    visual: torch.Tensor,
    audio: torch.Tensor,
    has_visual: torch.Tensor,
    has_audio: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """L_MI = L_MIv + L_MIa (eq. 6-8), each the InfoNCE bound's loss over the samples having it."""
    return info_nce(fused[has_visual], visual[has_visual], temperature) + info_nce(
        fused[has_audio], audio[has_audio], temperature
    )


def mcil_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    fused: torch.Tensor,
    visual: torch.Tensor,
    audio: torch.Tensor,
    has_visual: torch.Tensor,
    has_audio: torch.Tensor,
    config: LossConfig,
) -> torch.Tensor:
    """Eq. 9: ``alpha * L_CW + (1 - alpha) * L_MI``."""
    l_cw = similarity_weighted_cross_entropy(logits, labels, visual, has_visual)
    l_mi = mutual_information_loss(fused, visual, audio, has_visual, has_audio, config.mi_temperature)
    return config.alpha * l_cw + (1 - config.alpha) * l_mi


def distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Knowledge distillation (Hinton et al.; LwF): KL between softened distributions, scaled by T^2."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, dim=-1), F.softmax(teacher_logits / t, dim=-1), reduction="batchmean"
    ) * (t * t)
