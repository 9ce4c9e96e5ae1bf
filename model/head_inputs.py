"""What a statistics head (``model/heads.py``) reads of a batch, and how it scores the batch.

Per modality path (``visual``, ``audio``, ``av``), the samples that have that path's inputs and their
head features, chosen by ``HeadConfig.features``:

    frozen    the encoders' own outputs: the image tower without its experts, the audio encoder before P
    adapted   ``v`` and ``a`` (and, on ``av``, the fused feature), as the learner computes them
    both      the two, joined

each part unit-length, then joined (``heads.unit_features``). At inference each sample is scored on
the path its inputs allow (``av`` when it has both).

The learner is seen through ``HeadFeatureSource`` (a Protocol), so this module never imports it.
"""

from __future__ import annotations

from typing import Protocol

import torch

from model.backbone import TriModalBackbone
from model.batch import EncodedBatch, ForwardOutput
from model.fusion import PATH_CODES
from model.heads import StatisticsHead, unit_features
from model.learner_config import LearnerConfig


class HeadFeatureSource(Protocol):
    """What the head's inputs are computed from (``model.learner.Learner`` is one)."""

    @property
    def backbone(self) -> TriModalBackbone: ...

    @property
    def config(self) -> LearnerConfig: ...

    @property
    def prototypes(self) -> torch.Tensor: ...

    @property
    def classes(self) -> list[str]: ...

    @property
    def device(self) -> torch.device: ...

    def forward(self, batch: EncodedBatch, prototypes: torch.Tensor,
                extra_prototypes: torch.Tensor | None = None, *, training: bool = False,
                scores: bool = True, prototype_scores: bool = False) -> ForwardOutput: ...


def head_input_dims(backbone: TriModalBackbone, features: str | None) -> dict[str, int]:
    """Feature width per modality path of what the statistics head reads (``head.features``)."""
    b = backbone
    frozen = {"visual": b.image.output_dim, "audio": b.audio_dim}
    adapted = {"visual": b.embed_dim, "audio": b.embed_dim}
    dims = {}
    for path, parts in (("visual", ("visual",)), ("audio", ("audio",)), ("av", ("visual", "audio"))):
        width = sum(frozen[m] for m in parts) if features in ("frozen", "both") else 0
        width += sum(adapted[m] for m in parts) if features in ("adapted", "both") else 0
        dims[path] = width + (b.embed_dim if path == "av" and features in ("adapted", "both") else 0)
    return dims


def head_inputs(learner: HeadFeatureSource, batch: EncodedBatch,
                adapted: ForwardOutput | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per modality path: ``(rows, features)``, the samples that have that path's inputs and their
    ``(N_p, D_p)`` head features (each part unit-length, then joined; see ``heads.unit_features``).

    ``frozen`` parts are the encoders' own outputs (the image tower without its experts, the audio
    encoder before P); ``adapted`` parts are ``v``, ``a`` and, on the ``av`` path, the fused feature
    (taken from ``adapted`` when the caller has already computed them for ``batch``)."""
    features = learner.config.head.features
    backbone = learner.backbone
    with torch.no_grad():
        parts: dict[str, list[torch.Tensor]] = {"visual": [], "audio": [], "fused": []}
        has = {"visual": batch.has_image, "audio": batch.has_audio}
        for chunk in batch.chunks():
            if features in ("frozen", "both"):
                image = torch.zeros(len(chunk), backbone.image.output_dim, device=learner.device)
                rows = chunk.has_image.nonzero().flatten()
                if len(rows):
                    image[rows] = backbone.image.frozen_features(chunk.images[rows])
                parts.setdefault("frozen_visual", []).append(image)
                parts.setdefault("frozen_audio", []).append(chunk.audio)
            if features in ("adapted", "both") and adapted is None:
                out = learner.forward(chunk, learner.prototypes, scores=False)
                parts["visual"].append(out.visual)
                parts["audio"].append(out.audio)
                parts["fused"].append(out.fused)
    if adapted is not None and features in ("adapted", "both"):
        parts["visual"], parts["audio"], parts["fused"] = [adapted.visual], [adapted.audio], [adapted.fused]
    joined = {k: torch.cat(v) for k, v in parts.items() if v}
    out_by_path = {}
    for path, modalities in (("visual", ("visual",)), ("audio", ("audio",)), ("av", ("visual", "audio"))):
        rows = (has["visual"] & has["audio"]) if path == "av" else has[modalities[0]]
        rows = rows.nonzero().flatten()
        if not len(rows):
            continue
        chosen = [joined[f"frozen_{m}"][rows] for m in modalities if f"frozen_{m}" in joined]
        chosen += [joined[m][rows] for m in modalities if joined.get(m) is not None]
        if path == "av" and "fused" in joined:
            chosen.append(joined["fused"][rows])
        out_by_path[path] = (rows, unit_features(chosen))
    return out_by_path


def head_scores(learner: HeadFeatureSource, head: StatisticsHead, batch: EncodedBatch,
                adapted: ForwardOutput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(scores (B, C), path codes (B,), unknown (B,))`` from the statistics head: each sample is
    scored on the path its inputs allow. A pair with both inputs gets the head's fused answer
    (``StatisticsHead.pair_scores``: its paths' scores, weighted) and path code ``av``; whether it is
    unknown, the joint path's own verdict."""
    scores = torch.zeros(len(batch), len(learner.classes))
    paths = torch.zeros(len(batch), dtype=torch.long)
    unknown = torch.zeros(len(batch), dtype=torch.bool)
    inputs = head_inputs(learner, batch, adapted)
    pairs = (batch.has_image & batch.has_audio).cpu()
    if "av" in inputs:
        mix = head.fusion_weights()
        where = {p: {int(r): i for i, r in enumerate(inputs[p][0].cpu().tolist())} for p in mix if p in inputs}
        rows = inputs["av"][0].cpu()
        features = {p: inputs[p][1][[where[p][int(r)] for r in rows]] for p in where}
        s = head.pair_scores(features).cpu() if len(where) == len(mix) else torch.zeros(len(rows), len(learner.classes))
        scores[rows], paths[rows] = s, PATH_CODES["av"]
        if "av" in head.weights:  # whether a pair is unknown: the joint path's own verdict (model/heads.py)
            unknown[rows] = head.unknown(head.scores(inputs["av"][1], "av").cpu(), "av")
    for path in ("visual", "audio"):  # a sample with one input answers on that path
        if path not in inputs:
            continue
        rows, x = inputs[path]
        alone = ~pairs[rows.cpu()]
        rows, x = rows.cpu()[alone], x[alone.to(x.device)]
        if not len(rows):
            continue
        s = head.scores(x, path).cpu()
        scores[rows], paths[rows], unknown[rows] = s, PATH_CODES[path], head.unknown(s, path)
    return scores.to(learner.device), paths.to(learner.device), unknown.to(learner.device)
