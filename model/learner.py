"""The learner: a backbone, a fusion module, class prototypes and a strategy, behind one interface.

    learner = create_learner("tiny", "mcil")
    learner.learn_task(examples, ["applause", "lecture"])   # validates, trains, freezes
    learner.predict([Sample(image=img)])                    # over every class learned so far
    learner.save(directory); Learner.load(directory)        # identical predictions after the round trip

One training loop serves every strategy (``model/strategies``): encode the task's inputs once (the
frozen audio encoder runs once per sample per task, never per step), then epochs of
forward -> strategy loss -> AdamW step under a cosine-annealed learning rate. Modality dropout
(``modality_dropout``) hides one input of some pairs in each batch, so an image alone or a sound
alone is trained to classify too, not only the fused pair. Text prototypes are
recomputed with gradients each step from a random subset of the prompt templates (all 35 at
inference), so the text experts train too.

Trainable during a task: whatever has ``requires_grad`` among the experts, routers and trainable
projections of the backbone, and the fusion module. Trainable projections (``lite``) learn during the
first task only and are frozen after it, like everything else a task creates.

Strategies with per-task experts (``mcil``, ``moe-adapters``) also freeze each class's prototype
once its task is learned; training then scores new examples against the stored old prototypes, and
against pseudo-features of old classes drawn from their stored feature statistics (``model/replay.py``).
The two cross-entropies are weighted by how many classes each stands for (``replay_weighting``), so a
task of one new class does not outweigh nine old ones.

Every input is validated before anything changes; a failure (bad input, cancellation) leaves the
learner exactly as it was.

Devices: a learner runs where its backbone's parameters are (``learner.device``). Build it there
(``create_learner(..., device="cuda")``) or move it with :meth:`Learner.to`; new experts, prototypes,
encoded inputs and saved versions follow. Random draws (shuffling, modality dropout, router noise,
replayed features, new experts' initial weights) are made on the CPU, so a learner on a GPU is
trained on the same batches and from the same initial weights as one on the CPU (its results drift
by floating-point order only). Saved files hold CPU tensors.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from model.audio import check_waveform
from model.backbone import TriModalBackbone, WeightFiles, build_backbone
from model.batch import EncodedBatch, ForwardOutput
from model.device import same_device
from model.errors import CheckpointError, InvalidInputError, StateError
from model.fusion import PATH_CODES, build_fusion
from model.heads import StatisticsHead, unit_features
from model.images import image_to_tensor
from model.learner_config import LearnerConfig
from model.prompts import TEMPLATES, class_prototypes
from model.replay import ClassStatistics
from model.samples import PATHS, LabeledSample, Prediction, Sample
from model.strategies.base import Strategy
from model.training import (
    TaskReport,
    TrainingProgress,
    drop_modalities,
    dropped_masks,
    train,
)

FORMAT_VERSION = 1
ENCODE_CHUNK = 64


@dataclass
class _Task:
    key: str
    classes: list[str]


class Learner:
    """See the module docstring. Build one with :func:`create_learner` or :meth:`load`."""

    def __init__(self, backbone: TriModalBackbone, strategy: Strategy, config: LearnerConfig, preset: str) -> None:
        self.backbone = backbone
        self.strategy = strategy
        # The config in effect, so that what is saved and reported (``fusion.kind``) is what runs.
        config = replace(config, fusion=replace(config.fusion, kind=strategy.fusion_used(config.fusion.kind)),
                         head=replace(config.head, kind=config.head.kind or strategy.head_kind,
                                      features=config.head.features or strategy.head_features,
                                      expansion=(strategy.head_expansion if config.head.expansion is None
                                                 else config.head.expansion)))
        self.config = config
        self.preset = preset
        self.fusion = build_fusion(backbone.embed_dim, config.fusion).eval().to(backbone.device)
        self._tasks: list[_Task] = []
        self.prototypes = torch.zeros(0, backbone.embed_dim, device=backbone.device)  # (C, E), unit rows
        # Feature replay (model/replay.py); small, so kept and sampled on the CPU whatever the device.
        self.class_statistics = ClassStatistics(backbone.embed_dim)
        self.templates: tuple[str, ...] = TEMPLATES if config.text_diversity else (TEMPLATES[0],)
        # A head built from class statistics (model/heads.py); None: the strategy's scores (prototypes).
        self.head: StatisticsHead | None = None
        if config.head.kind != "prototypes":
            self.head = StatisticsHead(config.head.kind or "analytic", config.head, self._head_input_dims())

    # -- where it runs ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the learner computes: its backbone's device."""
        return self.backbone.device

    def to(self, device: torch.device | str) -> "Learner":
        """Moves the backbone, fusion module, prototypes and strategy state to ``device``; returns self.

        The frozen tensors are shared with every :meth:`clone` (and with a backbone this learner was
        copied from), so they move for those too: move a learner before cloning it, or build it on
        its device (``create_learner(..., device=...)``, ``backbone.copy_on(device)``)."""
        device = torch.device(device)
        self.backbone.to(device)
        self.fusion.to(device)
        self.prototypes = self.prototypes.to(device)
        self.strategy.to(device)
        return self

    # -- what the learner knows ---------------------------------------------------------------------
    @property
    def strategy_name(self) -> str:
        return self.strategy.name

    @property
    def classes(self) -> list[str]:
        return [c for t in self._tasks for c in t.classes]

    @property
    def tasks(self) -> list[list[str]]:
        return [list(t.classes) for t in self._tasks]

    @property
    def task_keys(self) -> list[str]:
        return [t.key for t in self._tasks]

    @property
    def logit_scale(self) -> float:
        return self.backbone.config.logit_scale

    @property
    def keeps_exemplars(self) -> bool:
        return self.strategy.keeps_exemplars

    def parameter_counts(self) -> dict[str, Any]:
        learned = self.backbone.learned_state()
        parameters = dict(self.backbone.named_parameters())
        frozen = sum(p.numel() for p in parameters.values()) - sum(
            v.numel() for k, v in learned.items() if k in parameters)
        per_task: dict[str, int] = {}
        for key, tensor in learned.items():
            for task in self.backbone.image.expert_tasks:
                if f".experts.{task}_" in key or key.endswith(f".heads.{task}.weight") or key.endswith(
                        f".heads.{task}.bias"):
                    per_task[task] = per_task.get(task, 0) + tensor.numel()
        fusion = sum(p.numel() for p in self.fusion.parameters())
        return {
            "frozen": int(frozen),
            "learned_total": int(sum(v.numel() for v in learned.values()) + fusion),
            "trainable_now": int(sum(p.numel() for p in self._trainable_parameters())),
            "fusion": int(fusion),
            "per_task": per_task,
        }

    def _trainable_parameters(self) -> list[torch.nn.Parameter]:
        modules = [self.backbone.image.adapters, self.backbone.text.adapters, self.fusion]
        if self.backbone.projections_trainable:
            modules.append(self.backbone.projections)
        return [p for m in modules for p in m.parameters() if p.requires_grad]

    # -- inputs ---------------------------------------------------------------------------------------
    def encode_inputs(self, samples: Sequence[Sample], field: str = "samples",
                      labels: Sequence[int] | None = None) -> EncodedBatch:
        """Validates and prepares samples; runs the frozen audio encoder. Raises InvalidInputError."""
        if len(samples) == 0:
            raise InvalidInputError(field, "no samples given")
        b = self.backbone
        for i, s in enumerate(samples):
            if not isinstance(s, Sample):
                raise InvalidInputError(f"{field}[{i}]", f"expected a Sample, got {type(s).__name__}")
            if s.image is None and s.audio is None:
                raise InvalidInputError(f"{field}[{i}]", "has neither an image nor audio")
            if s.image is not None:
                image_to_tensor(s.image, field=f"{field}[{i}].image")
            if s.audio is not None:
                if s.sample_rate is None:
                    raise InvalidInputError(f"{field}[{i}].sample_rate", "required when audio is given")
                check_waveform(s.audio, s.sample_rate, field=f"{field}[{i}].audio")
        n = len(samples)
        has_image = torch.tensor([s.image is not None for s in samples])
        has_audio = torch.tensor([s.audio is not None for s in samples])
        images = torch.zeros(n, 3, b.image_size, b.image_size)
        rows = has_image.nonzero().flatten().tolist()
        for start in range(0, len(rows), ENCODE_CHUNK):
            chunk = rows[start:start + ENCODE_CHUNK]
            images[chunk] = b.prepare_images([samples[i].image for i in chunk])
        audio = torch.zeros(n, b.audio_dim)
        rows = has_audio.nonzero().flatten().tolist()
        with torch.no_grad():
            for start in range(0, len(rows), ENCODE_CHUNK):
                chunk = rows[start:start + ENCODE_CHUNK]
                waves = b.prepare_audio([samples[i].audio for i in chunk], [samples[i].sample_rate for i in chunk])
                audio[chunk] = b.encode_audio_raw(waves.to(self.device)).cpu()
        label_tensor = torch.full((n,), -1, dtype=torch.long) if labels is None else torch.tensor(labels)
        return EncodedBatch(images, audio, has_image, has_audio, label_tensor).to(self.device)

    # -- forward --------------------------------------------------------------------------------------
    def unimodal_features(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v, a)``, each ``(B, E)``: image through the experts, audio through P; zeros where missing."""
        n, e = len(batch), self.backbone.embed_dim
        v = torch.zeros(n, e, device=self.device)
        rows = batch.has_image.nonzero().flatten()
        if len(rows):
            v = v.index_copy(0, rows, self.backbone.encode_image(batch.images[rows]))
        a = torch.zeros(n, e, device=self.device)
        rows = batch.has_audio.nonzero().flatten()
        if len(rows):
            a = a.index_copy(0, rows, self.backbone.project_audio(batch.audio[rows]))
        return v, a

    def forward(self, batch: EncodedBatch, prototypes: torch.Tensor,
                extra_prototypes: torch.Tensor | None = None, *, training: bool = False,
                scores: bool = True, prototype_scores: bool = False) -> ForwardOutput:
        """Features, fusion and logits. In training, logits are cosine scores against ``prototypes``
        (computed with gradients); at inference the strategy turns fused features into scores.
        ``scores=False`` skips the scores (``logits`` is then ``(B, 0)``)."""
        v, a = self.unimodal_features(batch)
        all_protos = prototypes if extra_prototypes is None else torch.cat([prototypes, extra_prototypes])
        fusion = self.fusion(v, a, batch.has_image, batch.has_audio, all_protos, self.logit_scale)
        if not scores:
            logits = v.new_zeros(len(batch), 0)
        elif training or prototype_scores:
            logits = self.logit_scale * F.normalize(fusion.fused, dim=-1) @ all_protos.T  # (B, C)
        else:
            logits = self.strategy.scores(self, fusion.fused, extra_prototypes)
        return ForwardOutput(logits, fusion.fused, v, a, fusion)

    # -- the statistics head's inputs ------------------------------------------------------------
    def _head_input_dims(self) -> dict[str, int]:
        """Feature width per modality path of what the statistics head reads (``head.features``)."""
        b, features = self.backbone, self.config.head.features
        frozen = {"visual": b.image.output_dim, "audio": b.audio_dim}
        adapted = {"visual": b.embed_dim, "audio": b.embed_dim}
        dims = {}
        for path, parts in (("visual", ("visual",)), ("audio", ("audio",)), ("av", ("visual", "audio"))):
            width = sum(frozen[m] for m in parts) if features in ("frozen", "both") else 0
            width += sum(adapted[m] for m in parts) if features in ("adapted", "both") else 0
            dims[path] = width + (b.embed_dim if path == "av" and features in ("adapted", "both") else 0)
        return dims

    def head_inputs(self, batch: EncodedBatch,
                    adapted: ForwardOutput | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per modality path: ``(rows, features)``, the samples that have that path's inputs and their
        ``(N_p, D_p)`` head features (each part unit-length, then joined; see ``heads.unit_features``).

        ``frozen`` parts are the encoders' own outputs (the image tower without its experts, the audio
        encoder before P); ``adapted`` parts are ``v``, ``a`` and, on the ``av`` path, the fused feature
        (taken from ``adapted`` when the caller has already computed them for ``batch``)."""
        features = self.config.head.features
        with torch.no_grad():
            parts: dict[str, list[torch.Tensor]] = {"visual": [], "audio": [], "fused": []}
            has = {"visual": batch.has_image, "audio": batch.has_audio}
            for chunk in self._batches(batch):
                if features in ("frozen", "both"):
                    image = torch.zeros(len(chunk), self.backbone.image.output_dim, device=self.device)
                    rows = chunk.has_image.nonzero().flatten()
                    if len(rows):
                        image[rows] = self.backbone.image.frozen_features(chunk.images[rows])
                    parts.setdefault("frozen_visual", []).append(image)
                    parts.setdefault("frozen_audio", []).append(chunk.audio)
                if features in ("adapted", "both") and adapted is None:
                    out = self.forward(chunk, self.prototypes, scores=False)
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

    def _learn_head(self, data: EncodedBatch) -> None:
        """Adds the task's class statistics to the statistics head and solves it again."""
        assert self.head is not None
        inputs = self.head_inputs(data)
        self.head.learn({p: x for p, (_, x) in inputs.items()},
                        {p: data.labels[rows] for p, (rows, _) in inputs.items()}, len(self.classes))

    def _head_scores(self, batch: EncodedBatch,
                     adapted: ForwardOutput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(scores (B, C), path codes (B,), unknown (B,))`` from the statistics head: each sample is
        scored on the path its inputs allow (``av`` when it has both)."""
        assert self.head is not None
        scores = torch.zeros(len(batch), len(self.classes))
        paths = torch.zeros(len(batch), dtype=torch.long)
        unknown = torch.zeros(len(batch), dtype=torch.bool)
        claimed = torch.zeros(len(batch), dtype=torch.bool)
        inputs = self.head_inputs(batch, adapted)
        for path in ("av", "visual", "audio"):  # a pair with both inputs answers on av only
            if path not in inputs:
                continue
            rows, x = inputs[path]
            rows = rows.cpu()
            fresh = ~claimed[rows]
            rows, x = rows[fresh], x[fresh.to(x.device)]
            if not len(rows):
                continue
            s = self.head.scores(x, path).cpu()
            scores[rows], paths[rows], unknown[rows] = s, PATH_CODES[path], self.head.unknown(s, path)
            claimed[rows] = True
        return scores.to(self.device), paths.to(self.device), unknown.to(self.device)

    def text_prototypes(self, class_names: Sequence[str], templates: Sequence[str] | None = None) -> torch.Tensor:
        return class_prototypes(self.backbone.encode_text, class_names, templates or self.templates)

    def _refresh_prototypes(self, new_classes: Sequence[str]) -> None:
        """After a task: strategies that freeze old prototypes compute only the new classes' (an old
        class keeps the prototype it was learned with); the others recompute every class's."""
        with torch.no_grad():
            if self.strategy.freezes_old_prototypes:
                self.prototypes = torch.cat([self.prototypes, self.text_prototypes(list(new_classes))])
            else:
                self.prototypes = self.text_prototypes(self.classes)

    # -- learning -------------------------------------------------------------------------------------
    def _validate_task(self, examples: Sequence[LabeledSample], class_names: Sequence[str]) -> list[str]:
        if isinstance(class_names, str) or len(class_names) == 0:
            raise InvalidInputError("class_names", "give at least one new class name")
        names = []
        for i, name in enumerate(class_names):
            if not isinstance(name, str) or not name.strip():
                raise InvalidInputError(f"class_names[{i}]", "empty class name")
            names.append(name.strip())
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise InvalidInputError("class_names", f"duplicate class name(s) {dup}")
        known = sorted(set(names) & set(self.classes))
        if known:
            raise InvalidInputError("class_names", f"class(es) {known} already learned")
        if len(examples) == 0:
            raise InvalidInputError("examples", "no examples given")
        counts = dict.fromkeys(names, 0)
        for i, ex in enumerate(examples):
            if not isinstance(ex, LabeledSample):
                raise InvalidInputError(f"examples[{i}]", f"expected a LabeledSample, got {type(ex).__name__}")
            label = ex.label.strip() if isinstance(ex.label, str) else ex.label
            if label not in counts:
                raise InvalidInputError(f"examples[{i}].label", f"{ex.label!r} is not one of the new classes {names}")
            counts[label] += 1
        empty = [n for n, c in counts.items() if c == 0]
        if empty:
            raise InvalidInputError("examples", f"no examples for class(es) {empty}")
        return names

    def learn_task(
        self,
        examples: Sequence[LabeledSample],
        class_names: Sequence[str],
        *,
        progress: Callable[[TrainingProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TaskReport:
        """Learns new classes from labelled examples. See the module docstring."""
        import time

        started = time.perf_counter()
        names = self._validate_task(examples, class_names)
        report = progress or (lambda p: None)
        training_size = len(examples) + self.strategy.stored_examples()  # what _train will iterate over
        report(TrainingProgress("preparing", 0, self.config.training.epochs_for(training_size), 0, 0, None))
        offset = len(self.classes)
        labels = [offset + names.index(ex.label.strip()) for ex in examples]
        data = self.encode_inputs(examples, field="examples", labels=labels)

        backup = self.clone()
        try:
            task_key = f"task{len(self._tasks) + 1}"
            trains = self.strategy.trains_on(self)  # before before_task, which may add what trains
            self.strategy.before_task(self, task_key)
            steps, last_loss = 0, None
            trained = sum(p.numel() for p in self._trainable_parameters()) if trains else 0
            if trains:
                steps, last_loss = self._train(self.strategy.training_data(self, data), names, report, should_stop)
            if self.backbone.projections_trainable:
                self.backbone.projections.requires_grad_(False)
            self._tasks.append(_Task(task_key, names))
            self._refresh_prototypes(names)
            if self.strategy.replays_features:
                self._record_class_statistics(data, len(names))
            self.strategy.after_task(self, task_key, data)
            if self.head is not None:
                self._learn_head(data)
        except BaseException:
            self.__dict__.update(backup.__dict__)
            raise
        return TaskReport(task_key, tuple(names), len(examples), steps, last_loss,
                          time.perf_counter() - started, trained)

    def _record_class_statistics(self, data: EncodedBatch, n_classes: int) -> None:
        """Feature statistics of the task just learned, for replay while later tasks train."""
        out = self.fused_features(data)
        self.class_statistics.add_classes({"visual": out.visual.cpu(), "audio": out.audio.cpu()},
                                          {"visual": data.has_image.cpu(), "audio": data.has_audio.cpu()},
                                          data.labels.cpu(), n_classes)

    def _train(self, data: EncodedBatch, new_classes: list[str], report: Callable[[TrainingProgress], None],
               should_stop: Callable[[], bool] | None) -> tuple[int, float | None]:
        """The task's training (``model.training.train``): logits over every class so far. Old
        classes' prototypes are recomputed with gradients, or (strategies that freeze them) taken as
        stored, as fixed negatives."""
        cfg = self.config.training
        freeze_old = self.strategy.freezes_old_prototypes
        class_names = new_classes if freeze_old else self.classes + new_classes
        seed = cfg.seed + 1000 * len(self._tasks)
        torch.manual_seed(seed)  # router noise in the adapters
        params = self._trainable_parameters()
        if not params:
            return 0, None

        def step_loss(batch: EncodedBatch, generator: torch.Generator, rng: random.Random) -> torch.Tensor:
            batch = drop_modalities(batch, self.config.modality_dropout, generator)
            templates = rng.sample(self.templates, min(cfg.prompts_per_step, len(self.templates)))
            prototypes = self.text_prototypes(class_names, templates)  # (C, E), with gradients
            if freeze_old:
                prototypes = torch.cat([self.prototypes, prototypes])  # old rows: stored, no gradient
            out = self.forward(batch, prototypes, training=True)
            loss = self.strategy.loss(self, batch, out)
            replayed = self._replay_loss(prototypes, generator)
            return loss if replayed is None else self._with_replay(loss, replayed, len(new_classes))

        self._set_training(True)
        try:
            return train(data, cfg, params, seed, step_loss, report, should_stop)
        finally:
            self._set_training(False)

    def _with_replay(self, loss: torch.Tensor, replayed: torch.Tensor, n_new: int) -> torch.Tensor:
        """The step's loss: the new examples' and the replayed features' (see ``replay_weighting``)."""
        if self.config.replay_weighting == "equal":
            return loss + replayed
        n_old = len(self.classes)
        return (n_new * loss + n_old * replayed) / (n_new + n_old)

    def _replay_loss(self, prototypes: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """Cross-entropy of pseudo-features of old classes (model/replay.py) against every prototype,
        through the fusion module; ``None`` when nothing is replayed."""
        n = self.config.replayed_features
        if n == 0 or len(self.class_statistics) == 0:  # statistics exist only for strategies that replay
            return None
        v, a, has_v, has_a, labels = (t.to(self.device) for t in self.class_statistics.sample(n, generator))
        has_v, has_a = dropped_masks(has_v, has_a, self.config.modality_dropout, generator)
        fusion = self.fusion(v, a, has_v, has_a, prototypes, self.logit_scale)
        logits = self.logit_scale * F.normalize(fusion.fused, dim=-1) @ prototypes.T
        return F.cross_entropy(logits, labels)

    def _set_training(self, on: bool) -> None:
        # Only the learned parts switch mode: frozen parts (and their batch-norm statistics) stay in eval.
        for module in (self.backbone.image.adapters, self.backbone.text.adapters, self.fusion):
            module.train(on)

    # -- inference ------------------------------------------------------------------------------------
    def _batches(self, batch: EncodedBatch) -> Iterator[EncodedBatch]:
        for start in range(0, len(batch), ENCODE_CHUNK):
            yield batch.select(torch.arange(start, min(start + ENCODE_CHUNK, len(batch))))

    @torch.no_grad()
    def infer(self, batch: EncodedBatch, extra_classes: Sequence[str] = ()) -> ForwardOutput:
        """Forward pass over encoded inputs; ``extra_classes`` join the candidates untrained."""
        if not self._tasks and not extra_classes:
            raise StateError("no classes learned yet")
        extra = self.text_prototypes(list(extra_classes)) if extra_classes else None
        if self.head is None or extra_classes:  # untrained classes can only be scored by their prototypes
            return self._forward_in_chunks(batch, extra, scores=True, prototype_scores=self.head is not None)
        out = self._forward_in_chunks(batch, None, scores=False)
        scores, paths, unknown = self._head_scores(batch, out)
        return replace(out, logits=scores, fusion=replace(out.fusion, path=paths), unknown=unknown)

    @torch.no_grad()
    def fused_features(self, batch: EncodedBatch) -> ForwardOutput:
        """Unimodal and fused features (no class scores needed): ``logits`` is empty."""
        return self._forward_in_chunks(batch, None, scores=False)

    def _forward_in_chunks(self, batch: EncodedBatch, extra: torch.Tensor | None, scores: bool,
                           prototype_scores: bool = False) -> ForwardOutput:
        chunks = [self.forward(b, self.prototypes, extra, scores=scores, prototype_scores=prototype_scores)
                  for b in self._batches(batch)]
        return ForwardOutput.concat(chunks)

    def predict(self, samples: Sequence[Sample], top_k: int = 5) -> list[Prediction]:
        """Top-k classes over everything learned so far, for each sample."""
        if not self._tasks:
            raise StateError("no classes learned yet")
        if not isinstance(top_k, int) or top_k < 1:
            raise InvalidInputError("top_k", f"must be a positive integer, got {top_k!r}")
        out = self.infer(self.encode_inputs(samples))
        # Prototypes: a softmax over every class. A statistics head: its own scores in [0, 1] (the ridge
        # estimate of each class's indicator, or the cosine to the class mean), not normalised.
        probs = out.logits.softmax(dim=-1) if self.head is None else out.logits.clamp(0.0, 1.0)
        k = min(top_k, probs.shape[1])
        values, index = probs.topk(k, dim=-1)
        names = self.classes
        unknown = out.unknown if out.unknown is not None else torch.zeros(len(probs), dtype=torch.bool)
        return [
            Prediction(tuple(names[j] for j in idx.tolist()), tuple(float(x) for x in val.tolist()), PATHS[int(p)],
                       bool(u))
            for idx, val, p, u in zip(index, values, out.fusion.path, unknown)
        ]

    # -- copies and persistence -------------------------------------------------------------------
    def clone(self) -> "Learner":
        """An independent learner sharing the frozen backbone (only learned state is copied)."""
        return copy.deepcopy(self)

    def learned_tensors(self) -> dict[str, torch.Tensor]:
        state = {f"backbone.{k}": v for k, v in self.backbone.learned_state().items()}
        state.update({f"fusion.{k}": v for k, v in self.fusion.state_dict().items()})
        return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}

    def save(self, directory: Path) -> None:
        """Writes ``learner.json``, ``learned.safetensors``, ``prototypes.safetensors`` (and
        ``head.safetensors`` for a statistics head, ``exemplars.safetensors`` for strategies that keep
        exemplars) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "preset": self.preset,
            "strategy": self.strategy.name,
            "config": self.config.to_dict(),
            "tasks": [{"key": t.key, "classes": t.classes} for t in self._tasks],
        }
        if self.head is not None:
            meta["head"] = self.head.metadata()
            save_file(self.head.state_dict(), str(directory / "head.safetensors"))
        save_file(self.learned_tensors(), str(directory / "learned.safetensors"))
        prototypes = {"prototypes": self.prototypes.cpu().contiguous()}
        if self.strategy.replays_features:
            prototypes.update(self.class_statistics.state_dict())
        save_file(prototypes, str(directory / "prototypes.safetensors"))
        strategy_state = self.strategy.state_dict()
        if strategy_state:
            save_file({k: v.cpu().contiguous() for k, v in strategy_state.items()},
                      str(directory / "exemplars.safetensors"))
        (directory / "learner.json").write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path, backbone: TriModalBackbone | None = None,
             weights: WeightFiles | None = None) -> "Learner":
        """Loads a saved learner; a missing, corrupt or mismatched file raises CheckpointError."""
        from model.strategies import create_strategy

        directory = Path(directory)
        meta_path = directory / "learner.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise CheckpointError(str(directory), "learner.json", "missing") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(str(directory), "learner.json", f"unreadable: {exc}") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(str(meta_path), "format_version", f"unsupported {meta.get('format_version')!r}")
        config = LearnerConfig.from_dict(meta["config"])
        if backbone is None:
            backbone = build_backbone(meta["preset"], weights)
        else:
            backbone = copy.deepcopy(backbone)  # never touch the caller's learned state
        learner = cls(backbone, create_strategy(meta["strategy"]), config, meta["preset"])
        if backbone.image.expert_tasks:
            raise ValueError("backbone: must be fresh (no experts) to load a saved learner into")
        for task in meta["tasks"]:
            learner.strategy.restore_task_structure(learner, task["key"])
        if backbone.projections_trainable and meta["tasks"]:
            backbone.projections.requires_grad_(False)
        learner._tasks = [_Task(t["key"], list(t["classes"])) for t in meta["tasks"]]
        tensors = _read_safetensors(directory / "learned.safetensors")
        try:
            backbone.load_learned_state({k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")})
            learner.fusion.load_state_dict({k[len("fusion."):]: v for k, v in tensors.items() if k.startswith("fusion.")})
        except (RuntimeError, ValueError) as exc:
            raise CheckpointError(str(directory / "learned.safetensors"), "state", str(exc)) from None
        saved_prototypes = _read_safetensors(directory / "prototypes.safetensors")
        learner.prototypes = saved_prototypes.get("prototypes", torch.zeros(0)).to(learner.device)
        if learner.prototypes.shape != (len(learner.classes), backbone.embed_dim):
            raise CheckpointError(str(directory / "prototypes.safetensors"), "prototypes",
                                  f"shape {tuple(learner.prototypes.shape)} does not match "
                                  f"{len(learner.classes)} classes x {backbone.embed_dim}")
        if learner.strategy.replays_features:
            try:
                learner.class_statistics.load_state_dict(saved_prototypes, len(learner.classes))
            except ValueError as exc:
                raise CheckpointError(str(directory / "prototypes.safetensors"), "class statistics", str(exc)) from None
        if learner.head is not None and meta["tasks"]:
            learner.head.load_state_dict(_read_safetensors(directory / "head.safetensors"), meta.get("head", {}),
                                         str(directory / "head.safetensors"))
            if learner.head.classes != len(learner.classes):
                raise CheckpointError(str(directory / "head.safetensors"), "head",
                                      f"{learner.head.classes} classes for {len(learner.classes)} learned")
        if learner.strategy.keeps_exemplars and meta["tasks"]:
            learner.strategy.load_state_dict(_read_safetensors(directory / "exemplars.safetensors"))
            learner.strategy.to(learner.device)
        return learner


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(str(path.parent), path.name, "missing") from None
    except Exception as exc:  # safetensors raises its own error types for truncated or corrupt files
        raise CheckpointError(str(path.parent), path.name, f"corrupt: {exc}") from None


def create_learner(
    preset: str = "lite",
    strategy: str = "mcil",
    *,
    backbone: TriModalBackbone | None = None,
    config: LearnerConfig | None = None,
    weights: WeightFiles | None = None,
    device: torch.device | str | None = None,
) -> Learner:
    """Builds a fresh learner (no classes yet) for ``preset`` and ``strategy``, on ``device``
    (``None``: where ``backbone`` is, or the CPU for a backbone built here). A given ``backbone`` on
    another device is copied there, not moved."""
    from model.strategies import create_strategy

    strat = create_strategy(strategy)
    if backbone is None:
        backbone = build_backbone(preset, weights)
        if device is not None:
            backbone.to(torch.device(device))
    elif device is not None and not same_device(backbone.device, torch.device(device)):
        backbone = backbone.copy_on(device)  # the caller's backbone stays where it is
    return Learner(backbone, strat, config or LearnerConfig(), preset)
