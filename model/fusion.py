"""Audio-visual fusion: AAVFM (the paper's adaptive module) and plain concatenation.

Both take the visual feature ``v = F_v(image)`` and the projected audio feature ``a = P(F_a(audio))``
(each ``(B, E)``, zeros where the sample lacks that modality) and return one feature per sample in
the text-prototype space, plus the modality path each sample took:

AAVFM, per sample (paper eq. 1-2):
    r = pearson(v, a)                                  # correlation across the E feature dims
    r <  th : f = strong(v, a)                         # the weak modality is masked out
    r >= th : c = [w_v * v ; w_a * a]                  # (2, E): weighted concatenation as two tokens
              f_ca = softmax(v c^T / sqrt(E)) c        # (1, E): cross-attention, v queries c
              f = f_ca + MLP(f_ca)                     # trainable MLP (residual, zero-initialised)
The strong modality is configured (``visual``/``audio``) or ``auto``: per sample, the one whose own
prediction is more confident (higher top softmax probability against the class prototypes).
A sample with one modality takes that modality's path; fusion needs both.

Default ``th = -1``: every pair takes the fusion branch, and masking is left to the learned modality
weights. The paper uses 0.8 with encoders trained together (CLIP and AudioCLIP). With ``lite``'s
encoders, trained apart, ``r`` rarely reaches 0.8: on AV-MNIST validation data (10% of train.csv,
T = 5, seed 0) th = 0.8 fused 0-2% of pairs and reached 71.1% average accuracy, th = 0.4 fused
72-89% and reached 80.9%, th = -1 reached 83.9% (ab927db:docs/benchmarks.md has the commands).

Decision (not pinned by the paper): ``unit_inputs`` (default on) L2-normalises ``v`` and ``a``
before the cross-attention. The attention logits ``v . (w a) / sqrt(E)`` grow with the features'
norms: ``lite``'s projected features have norms of about 20 (image) and 14 (audio), so before any
training the logit gap is about 10 and the softmax puts 0.9999 of its weight on ``v`` (measured on
50 AV-MNIST test pairs): sound never reaches the fused feature, and the saturated softmax passes no
gradient that could change it. With unit inputs the two logits start within ``1 / sqrt(E)`` of each
other. On validation data (T = 5, seed 0) average accuracy rose from 83.6 to 88.5 and the sound-only
path's last accuracy from 25.0 to 35.9 (ab927db:docs/benchmarks.md).

Decision (not pinned by the paper): the MLP is residual with a zero-initialised last layer, so an
untrained module returns a convex combination of ``v`` and ``a``, which already lives in the prototype
space; without it the first steps of every task would start from a random map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence, cast

import torch
from torch import nn
from torch.nn import functional as F

from model.samples import PATHS

PATH_CODES = {name: i for i, name in enumerate(PATHS)}  # av: 0, visual: 1, audio: 2

FusionKind = Literal["aavfm", "concat"]


@dataclass(frozen=True)
class FusionConfig:
    kind: FusionKind = "aavfm"
    threshold: float = -1.0  # every pair fused; see the module docstring
    strong_modality: Literal["visual", "audio", "auto"] = "auto"
    mlp_ratio: float = 2.0
    unit_inputs: bool = True  # L2-normalise v and a before the cross-attention; see the module docstring

    def __post_init__(self) -> None:
        if self.kind not in ("aavfm", "concat"):
            raise ValueError(f"kind: must be 'aavfm' or 'concat', got {self.kind!r}")
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold: a Pearson correlation bound in [-1, 1], got {self.threshold}")
        if self.strong_modality not in ("visual", "audio", "auto"):
            raise ValueError(f"strong_modality: 'visual', 'audio' or 'auto', got {self.strong_modality!r}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio: must be > 0, got {self.mlp_ratio}")


# The fields only AAVFM reads; concatenation (``kind="concat"``) ignores them.
AAVFM_ONLY_FIELDS = frozenset({"threshold", "strong_modality", "mlp_ratio", "unit_inputs"})


@dataclass
class FusionOutput:
    fused: torch.Tensor  # (B, E)
    path: torch.Tensor  # (B,) long: PATH_CODES
    correlation: torch.Tensor  # (B,) Pearson r (NaN where a modality is missing)

    @staticmethod
    def concat(outputs: Sequence["FusionOutput"]) -> "FusionOutput":
        """The outputs of consecutive chunks of one batch, as one output."""
        return FusionOutput(torch.cat([o.fused for o in outputs]), torch.cat([o.path for o in outputs]),
                            torch.cat([o.correlation for o in outputs]))


def pearson(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Per-sample Pearson correlation across feature dimensions: ``(B, E), (B, E) -> (B,)``."""
    return F.cosine_similarity(v - v.mean(dim=-1, keepdim=True), a - a.mean(dim=-1, keepdim=True), dim=-1)


def correlation_where_both(v: torch.Tensor, a: torch.Tensor, both: torch.Tensor) -> torch.Tensor:
    """Pearson r for samples with both inputs, NaN for the others: ``(B,)``."""
    return torch.where(both, pearson(v, a), torch.full_like(v[:, 0], float("nan")))


def confidence(x: torch.Tensor, prototypes: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """Top softmax probability of ``x`` against the class prototypes: ``(B, E) -> (B,)``."""
    logits = logit_scale * F.normalize(x, dim=-1) @ prototypes.T  # (B, C)
    return logits.softmax(dim=-1).amax(dim=-1)


def single_modality_paths(has_v: torch.Tensor, has_a: torch.Tensor) -> torch.Tensor:
    return torch.where(has_v, PATH_CODES["visual"], PATH_CODES["audio"])


class AAVFM(nn.Module):
    """Adaptive Audio-Visual Fusion Module (masking threshold + dynamic weighted cross-attention)."""

    def __init__(self, dim: int, config: FusionConfig) -> None:
        super().__init__()
        self.config = config
        self.dim = dim
        self.modality_logits = nn.Parameter(torch.zeros(2))  # softmax -> (w_v, w_a)
        hidden = max(1, int(dim * config.mlp_ratio))
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        last = cast(nn.Linear, self.mlp[-1])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def modality_weights(self) -> torch.Tensor:
        return self.modality_logits.softmax(dim=0)  # (2,)

    def fuse(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The dynamic fusion branch (eq. 2 and the MLP) for every sample: ``(B, E) -> (B, E)``."""
        if self.config.unit_inputs:
            v, a = F.normalize(v, dim=-1), F.normalize(a, dim=-1)
        w = self.modality_weights()
        c = torch.stack([w[0] * v, w[1] * a], dim=1)  # (B, 2, E)
        attn = (v.unsqueeze(1) @ c.transpose(1, 2) / math.sqrt(self.dim)).softmax(dim=-1)  # (B, 1, 2)
        f_ca = (attn @ c).squeeze(1)  # (B, E)
        fused: torch.Tensor = f_ca + self.mlp(f_ca)
        return fused

    def fuse_pairs(self, v: torch.Tensor, a: torch.Tensor, prototypes: torch.Tensor,
                   logit_scale: float) -> torch.Tensor:
        """The fused feature of samples that all have both inputs, as :meth:`forward` computes it, with
        no data-dependent branch (for the exported graphs, export/compiled.py): ``(B, E)``."""
        fuse = pearson(v, a) >= self.config.threshold
        single = torch.where(self.prefers_visual(v, a, prototypes, logit_scale).unsqueeze(-1), v, a)
        return torch.where(fuse.unsqueeze(-1), self.fuse(v, a), single)

    @torch.no_grad()
    def prefers_visual(self, v: torch.Tensor, a: torch.Tensor, prototypes: torch.Tensor,
                       logit_scale: float) -> torch.Tensor:
        """``(B,)`` bool: for a pair that is not fused, whether ``v`` is the strong modality (the
        configured one, or with ``auto`` the one whose own prediction is more confident)."""
        strong = self.config.strong_modality
        if strong == "auto":
            return confidence(v, prototypes, logit_scale) >= confidence(a, prototypes, logit_scale)
        return torch.full((v.shape[0],), strong == "visual", dtype=torch.bool, device=v.device)

    def forward(
        self,
        v: torch.Tensor,
        a: torch.Tensor,
        has_v: torch.Tensor,
        has_a: torch.Tensor,
        prototypes: torch.Tensor,
        logit_scale: float,
    ) -> FusionOutput:
        both = has_v & has_a  # (B,)
        r = correlation_where_both(v, a, both)
        fuse = both & (r >= self.config.threshold)
        # Strong modality for samples that fall back to one input: a pair's preferred one, or the one there is.
        pick_v = torch.where(both, self.prefers_visual(v, a, prototypes, logit_scale), has_v)
        single = torch.where(pick_v.unsqueeze(-1), v, a)  # (B, E)
        path = torch.where(pick_v, PATH_CODES["visual"], PATH_CODES["audio"])
        if fuse.any():
            fused = torch.where(fuse.unsqueeze(-1), self.fuse(v, a), single)
            path = torch.where(fuse, PATH_CODES["av"], path)
        else:
            fused = single
        return FusionOutput(fused=fused, path=path, correlation=r)


class ConcatFusion(nn.Module):
    """Simple fusion for the baselines: a linear map of ``[v ; a]``, initialised to their average."""

    def __init__(self, dim: int, config: FusionConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = nn.Linear(2 * dim, dim)
        with torch.no_grad():
            eye = torch.eye(dim) / 2
            self.linear.weight.copy_(torch.cat([eye, eye], dim=1))
            self.linear.bias.zero_()

    def fuse_pairs(self, v: torch.Tensor, a: torch.Tensor, prototypes: torch.Tensor,
                   logit_scale: float) -> torch.Tensor:
        """The fused feature of samples that all have both inputs: ``(B, E)``."""
        fused: torch.Tensor = self.linear(torch.cat([v, a], dim=-1))
        return fused

    def forward(
        self,
        v: torch.Tensor,
        a: torch.Tensor,
        has_v: torch.Tensor,
        has_a: torch.Tensor,
        prototypes: torch.Tensor,
        logit_scale: float,
    ) -> FusionOutput:
        both = has_v & has_a
        single = torch.where(has_v.unsqueeze(-1), v, a)
        fused = torch.where(both.unsqueeze(-1), self.linear(torch.cat([v, a], dim=-1)), single)
        path = torch.where(both, PATH_CODES["av"], single_modality_paths(has_v, has_a))
        return FusionOutput(fused=fused, path=path, correlation=correlation_where_both(v, a, both))


def build_fusion(dim: int, config: FusionConfig) -> nn.Module:
    return AAVFM(dim, config) if config.kind == "aavfm" else ConcatFusion(dim, config)
