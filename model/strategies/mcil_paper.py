"""`mcil-paper`: the paper's method as published. MIFE experts per task + AAVFM +
``a * L_CW + (1 - a) * L_MI``, classified by cosine to text prototypes; every task trains.

It forgets (23.5 points at T = 5 on AV-MNIST, docs/benchmarks.md): kept so that the paper's method
stays reproducible. The product's default, `mcil`, reads the frozen encoders and classifies with
the analytic head.

Ablations are configuration, not code: ``LearnerConfig(text_diversity=False)`` (one prompt per
class), ``FusionConfig(kind="concat")`` (no AAVFM), ``LossConfig(kind="cross_entropy")`` (no MCIL loss).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from model.losses import mcil_loss
from model.strategies.moe_adapters import MoEAdapters

if TYPE_CHECKING:
    from model.batch import EncodedBatch, ForwardOutput
    from model.strategies.base import LearnerView


class MCILPaper(MoEAdapters):
    name = "mcil-paper"
    fusion_kind = "aavfm"

    def loss(self, learner: "LearnerView", batch: "EncodedBatch", out: "ForwardOutput") -> torch.Tensor:
        cfg = learner.config.loss
        if cfg.kind == "cross_entropy":
            return F.cross_entropy(out.logits, batch.labels)
        return mcil_loss(out.logits, batch.labels, out.fused, out.visual, out.audio, batch.has_image,
                         batch.has_audio, cfg)
