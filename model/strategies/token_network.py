"""Strategies whose trainable part is a network of their own over the frozen encoders' tokens.

``cign`` and ``mmcl`` (model/strategies/cign.py, mmcl.py) do not adapt the encoders: both papers put
their trainable parts after (CIGN) or beside (MMCL) frozen pre-trained encoders. Here both read the
same tokens of every sample, computed by the frozen encoders once per task and never per step:

    visual   (B, P, E)   the image tower's spatial tokens before pooling (``Tower.frozen_tokens``: a
                         CNN's feature-map locations, 5 x 5 for ``lite``; a ViT's patches), through the
                         image projection
    audio    (B, E)      the audio encoder's pooled feature through P (one global token, as in CIGN)

Before the projections, each modality's input is centred on the mean of the first task's (kept
with the version, never updated): ``lite``'s audio features share one large common direction (mean
pairwise cosine 0.976 over 200 recordings, 0.01 once centred), which left a single audio token
nearly constant to the networks and the audio path at chance on two classes (docs/model.md, "CIGN").

The encoders' outputs are computed once per task; the projections are applied at every step
(:meth:`TokenStrategy.projected`), because, as in ``mcil``, a preset's trainable projections
(``lite``'s, which map encoders trained apart into one space) learn during the first task, with the
network, and are frozen after it.

What a network returns (``NetworkOutput``): class scores, and per-sample visual, audio and joint
features of width E (what a statistics head reads when one is configured, model/head_inputs.py).

The learner delegates its forward pass to :meth:`TokenStrategy.forward` and its training to
:meth:`TokenStrategy.train`, which runs the shared loop (``model.training.train``: AdamW, cosine
schedule, clipping, progress, cancellation) over the task's tokens with the strategy's loss. Before a
task that follows another, the network is copied as a frozen teacher (the model at t - 1) for the
distillation terms both papers use.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar

import torch
from torch import nn

from model.batch import ForwardOutput
from model.fusion import PATH_CODES, FusionOutput, correlation_where_both, single_modality_paths
from model.strategies.base import Strategy
from model.training import TrainingProgress, dropped_masks, train

if TYPE_CHECKING:
    from model.backbone import TriModalBackbone
    from model.batch import EncodedBatch, TaskData
    from model.strategies.base import LearnerView

TOKEN_CHUNK = 64
"""Samples run through the frozen image tower at a time when computing tokens."""


@dataclass
class Tokens:
    """What a token network reads of a batch (see the module docstring), with masks and labels."""

    visual: torch.Tensor  # (B, P, E), zeros where has_image is False
    audio: torch.Tensor  # (B, E), zeros where has_audio is False
    has_image: torch.Tensor  # (B,) bool
    has_audio: torch.Tensor  # (B,) bool
    labels: torch.Tensor  # (B,) long

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select(self, index: torch.Tensor) -> "Tokens":
        return Tokens(self.visual[index], self.audio[index], self.has_image[index], self.has_audio[index],
                      self.labels[index])

    def with_masks(self, has_image: torch.Tensor, has_audio: torch.Tensor) -> "Tokens":
        return Tokens(self.visual, self.audio, has_image, has_audio, self.labels)


@torch.no_grad()
def frozen_tokens(backbone: "TriModalBackbone", batch: "EncodedBatch") -> Tokens:
    """The frozen encoders' outputs for ``batch``, before the projections: visual ``(B, P, D_image)``
    (zeros where there is no image), audio ``(B, D_audio)`` (the batch's audio features)."""
    rows = batch.has_image.nonzero().flatten()
    pieces = [backbone.image.frozen_tokens(batch.images[rows[i:i + TOKEN_CHUNK]]) for i in range(0, len(rows), TOKEN_CHUNK)]
    width = pieces[0].shape[1] if pieces else 1
    visual = torch.zeros(len(batch), width, backbone.image.output_dim, device=batch.images.device)
    if pieces:
        visual[rows] = torch.cat(pieces)
    return Tokens(visual, batch.audio, batch.has_image, batch.has_audio, batch.labels)


def input_means(tokens: Tokens) -> dict[str, torch.Tensor]:
    """Per modality, the mean of :func:`frozen_tokens`' outputs over the samples that have it."""
    visual = tokens.visual[tokens.has_image]  # (N, P, D)
    audio = tokens.audio[tokens.has_audio]
    return {"visual": visual.mean(dim=(0, 1)) if len(visual) else torch.zeros(tokens.visual.shape[-1]),
            "audio": audio.mean(dim=0) if len(audio) else torch.zeros(tokens.audio.shape[-1])}


def projected(backbone: "TriModalBackbone", tokens: Tokens, means: dict[str, torch.Tensor]) -> Tokens:
    """``tokens`` of :func:`frozen_tokens`, centred on ``means``, through the image projection and P,
    into ``(B, P, E)`` and ``(B, E)``; zeros stay where a sample lacks the modality."""
    v = backbone.projections["image"](tokens.visual - means["visual"]) * tokens.has_image.view(-1, 1, 1)
    a = backbone.project_audio(tokens.audio - means["audio"]) * tokens.has_audio.view(-1, 1)
    return Tokens(v, a, tokens.has_image, tokens.has_audio, tokens.labels)


@dataclass
class NetworkOutput:
    """A token network's forward: scores over the learned classes and the features behind them."""

    scores: torch.Tensor  # (B, C)
    visual: torch.Tensor  # (B, E)
    audio: torch.Tensor  # (B, E)
    joint: torch.Tensor  # (B, E): both modalities where the sample has both, else the one it has


class TokenStrategy(Strategy):
    """A strategy that trains a network of its own over frozen tokens (see the module docstring).

    Subclasses build and grow the network (``build_network``, ``grow``) and give the task's loss
    (``token_loss``)."""

    compiles: ClassVar[bool] = False

    def __init__(self) -> None:
        self.network: nn.Module | None = None
        self.teacher: nn.Module | None = None
        self.means: dict[str, torch.Tensor] = {}  # the first task's input means (see the module docstring)

    def project(self, learner: "LearnerView", tokens: Tokens) -> Tokens:
        return projected(learner.backbone, tokens, self.means)

    # -- what subclasses provide --------------------------------------------------------------------
    def build_network(self, learner: "LearnerView") -> nn.Module:
        raise NotImplementedError

    def grow(self, learner: "LearnerView", task_key: str, new_classes: int) -> None:
        """Adds what a task brings (class tokens, experts) before it trains."""

    def run_network(self, network: nn.Module, tokens: Tokens, prototypes: torch.Tensor,
                    learner: "LearnerView") -> NetworkOutput:
        raise NotImplementedError

    def token_loss(self, learner: "LearnerView", tokens: Tokens, prototypes: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    # -- the learner's hooks ----------------------------------------------------------------------
    def before_task(self, learner: "LearnerView", task_key: str) -> None:
        if self.network is None:
            self.network = self.build_network(learner).to(learner.backbone.device)
        self.network.eval()
        self.teacher = None
        if learner.classes:
            self.teacher = copy.deepcopy(self.network).requires_grad_(False).eval()

    def train(self, learner: "LearnerView", data: "TaskData", new_classes: list[str],
              report: Callable[[TrainingProgress], None],
              should_stop: Callable[[], bool] | None) -> tuple[int, float | None]:
        assert self.network is not None, "before_task builds the network"
        self.grow(learner, f"task{len(learner.tasks) + 1}", len(new_classes))
        tokens = frozen_tokens(learner.backbone, data)
        if not self.means:
            self.means = input_means(tokens)
        prototypes = learner.text_prototypes(learner.classes + new_classes).detach()
        cfg = learner.config.training
        projections = [learner.backbone.projections[m] for m in ("image", "audio")]
        params = [p for m in (self.network, *projections) for p in m.parameters() if p.requires_grad]
        seed = cfg.seed + 1000 * len(learner.tasks)
        torch.manual_seed(seed)

        def step_loss(batch: Tokens, generator: torch.Generator, rng: random.Random) -> torch.Tensor:
            masks = dropped_masks(batch.has_image, batch.has_audio, learner.config.modality_dropout, generator)
            return self.token_loss(learner, self.project(learner, batch.with_masks(*masks)), prototypes, generator)

        self.network.train()
        try:
            return train(tokens, cfg, params, seed, step_loss, report, should_stop)  # type: ignore[arg-type]
        finally:
            self.network.eval()

    def after_task(self, learner: "LearnerView", task_key: str, data: "TaskData") -> None:
        self.teacher = None

    def forward(self, learner: "LearnerView", batch: "EncodedBatch", prototypes: torch.Tensor, *,
                training: bool, scores: bool) -> ForwardOutput:
        assert self.network is not None, "no task learned yet"
        tokens = self.project(learner, frozen_tokens(learner.backbone, batch))
        out = self.run_network(self.network, tokens, prototypes[:len(learner.classes)], learner)
        logits = out.scores if scores else out.scores[:, :0]
        extra = len(prototypes) - len(learner.classes)
        if scores and extra > 0:  # untrained classes: below every learned one (the network has none of them)
            logits = torch.cat([logits, logits.new_full((len(batch), extra), torch.finfo(logits.dtype).min)], 1)
        both = batch.has_image & batch.has_audio
        paths = torch.where(both, PATH_CODES["av"], single_modality_paths(batch.has_image, batch.has_audio))
        fusion = FusionOutput(out.joint, paths,
                              correlation_where_both(out.visual, out.audio, both))
        return ForwardOutput(logits, out.joint, out.visual, out.audio, fusion)

    def to(self, device: torch.device) -> None:
        if self.network is not None:
            self.network.to(device)
        self.means = {k: v.to(device) for k, v in self.means.items()}

    # -- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.network is None:
            return {}
        state = {f"network.{k}": v for k, v in self.network.state_dict().items()}
        state.update({f"means.{k}": v for k, v in self.means.items()})
        return state

    def network_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The saved network's tensors (``network.*``), or a ValueError naming what is missing; restores
        the input means."""
        tensors = {k[len("network."):]: v for k, v in state.items() if k.startswith("network.")}
        if not tensors or any(f"means.{m}" not in state for m in ("visual", "audio")):
            raise ValueError(f"strategy {self.name}: no saved network and input means")
        self.means = {m: state[f"means.{m}"] for m in ("visual", "audio")}
        return tensors
