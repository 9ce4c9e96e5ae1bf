"""The learner: a backbone, a fusion module, class prototypes and a strategy, behind one interface.

    learner = create_learner("tiny", "mcil")
    learner.learn_task(examples, ["applause", "lecture"])   # validates, trains, freezes
    learner.predict([Sample(image=img)])                    # over every class learned so far
    learner.save(directory); Learner.load(directory)        # identical predictions after the round trip

Where each part lives:

    model/batch.py          the inputs (validated, encoded once per task: the frozen audio encoder runs
                            once per sample per task, never per step) and forward outputs
    model/training.py       the one training loop every strategy shares, modality dropout, feature replay
    model/strategies/       what each continual-learning method adds to the loop (seen as a LearnerView)
    model/head_inputs.py    what a statistics head (model/heads.py) reads of a batch
    model/checkpoint.py     saving and loading a version (``save``, ``load``)
    model/learner_config.py ``LearnerConfig``

Trainable during a task: whatever has ``requires_grad`` among the experts, routers and trainable
projections of the backbone, and the fusion module. Trainable projections (``lite``) learn during the
first task only and are frozen after it, like everything else a task creates.

Strategies with per-task experts (``mcil-paper``, ``moe-adapters``) also freeze each class's prototype
once its task is learned, and keep the feature statistics of the classes learned (``model/replay.py``)
to replay while later tasks train.

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
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch.nn import functional as F

from model.backbone import TriModalBackbone, WeightFiles, build_backbone
from model.batch import EncodedBatch, ForwardOutput, encode_samples, validate_task
from model.checkpoint import load_version, save_version
from model.class_sums import PathStatistics
from model.device import same_device
from model.errors import StateError
from model.fusion import build_fusion
from model.head_inputs import head_input_dims, head_inputs, head_scores
from model.heads import StatisticsHead
from model.learner_config import LearnerConfig
from model.prompts import TEMPLATES, class_prototypes
from model.replay import ClassStatistics
from model.samples import LabeledSample, Prediction, Sample, check_top_k, rank
from model.strategies import create_strategy
from model.strategies.base import Strategy
from model.training import TaskReport, TrainingProgress

RECEIVED_TASK = "district"
"""The key prefix of a task whose classes were received, not taught (:meth:`Learner.receive_classes`)."""


@dataclass
class _Task:
    key: str
    classes: list[str]  # the classes this task added, in order (none for a task of known classes)
    revisited: list[str] = field(default_factory=list)  # learned classes it brought more examples of


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
            self.head = StatisticsHead(config.head.kind or "analytic", config.head,
                                        head_input_dims(backbone, config.head.features))

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
    def taught_tasks(self) -> int:
        """How many of the tasks were taught to this learner, not received (:meth:`receive_classes`)."""
        return sum(1 for t in self._tasks if not t.key.startswith(RECEIVED_TASK))

    @property
    def revisited(self) -> list[list[str]]:
        """Per task, the learned classes it brought more examples of (domain-incremental tasks)."""
        return [list(t.revisited) for t in self._tasks]

    @property
    def logit_scale(self) -> float:
        return self.backbone.config.logit_scale

    @property
    def keeps_exemplars(self) -> bool:
        return self.strategy.keeps_examples(self.config)

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
        network = self.strategy.network
        # A strategy with a network of its own never runs the fusion module: its network counts instead.
        fusion = 0 if network is not None else sum(p.numel() for p in self.fusion.parameters())
        own = 0 if network is None else sum(p.numel() for p in network.parameters())
        return {
            "frozen": int(frozen),
            "learned_total": int(sum(v.numel() for v in learned.values()) + fusion + own),
            "trainable_now": int(sum(p.numel() for p in self.trainable_parameters())),
            "fusion": int(fusion),
            "network": int(own),
            "per_task": per_task,
        }

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """What a task trains now (``requires_grad``): experts, routers, trainable projections, fusion;
        for a strategy with a network of its own (``cign``, ``mmcl``), that network and the trainable
        image and audio projections."""
        network = self.strategy.network
        if network is not None:
            mine = [network, *(self.backbone.projections[m] for m in ("image", "audio"))]
            return [p for m in mine for p in m.parameters() if p.requires_grad]
        modules = [self.backbone.image.adapters, self.backbone.text.adapters, self.fusion]
        if self.backbone.projections_trainable:
            modules.append(self.backbone.projections)
        return [p for m in modules for p in m.parameters() if p.requires_grad]

    # -- inputs ---------------------------------------------------------------------------------------
    def encode_inputs(self, samples: Sequence[Sample], field: str = "samples",
                      labels: Sequence[int] | None = None) -> EncodedBatch:
        """Validates and prepares samples; runs the frozen audio encoder. Raises InvalidInputError."""
        return encode_samples(self.backbone, samples, field, labels)

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
        ``scores=False`` skips the scores (``logits`` is then ``(B, 0)``). A strategy with a network
        of its own computes the whole forward (``Strategy.forward``)."""
        all_protos = prototypes if extra_prototypes is None else torch.cat([prototypes, extra_prototypes])
        if self.strategy.network is not None:
            return self.strategy.forward(self, batch, all_protos, training=training, scores=scores)
        v, a = self.unimodal_features(batch)
        fusion = self.fusion(v, a, batch.has_image, batch.has_audio, all_protos, self.logit_scale)
        if not scores:
            logits = v.new_zeros(len(batch), 0)
        elif training or prototype_scores:
            logits = self.logit_scale * F.normalize(fusion.fused, dim=-1) @ all_protos.T  # (B, C)
        else:
            logits = self.strategy.scores(self, fusion.fused, extra_prototypes)
        return ForwardOutput(logits, fusion.fused, v, a, fusion)

    # -- the statistics head (model/heads.py, model/head_inputs.py) -------------------------------
    def head_inputs(self, batch: EncodedBatch,
                    adapted: ForwardOutput | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per modality path: ``(rows, features)``, what the statistics head reads of ``batch``
        (``model.head_inputs.head_inputs``)."""
        return head_inputs(self, batch, adapted)

    def _learn_head(self, data: EncodedBatch) -> None:
        """Adds the task's class statistics to the statistics head and solves it again."""
        assert self.head is not None
        inputs = self.head_inputs(data)
        self.head.learn({p: x for p, (_, x) in inputs.items()},
                        {p: data.labels[rows] for p, (rows, _) in inputs.items()}, len(self.classes))

    # -- prototypes ------------------------------------------------------------------------------------
    def text_prototypes(self, class_names: Sequence[str], templates: Sequence[str] | None = None) -> torch.Tensor:
        return class_prototypes(self.backbone.encode_text, class_names, templates or self.templates)

    def _refresh_prototypes(self, new_classes: Sequence[str]) -> None:
        """After a task: strategies that freeze old prototypes compute only the new classes' (an old
        class keeps the prototype it was learned with); the others recompute every class's."""
        with torch.no_grad():
            if self.strategy.freezes_old_prototypes:
                if new_classes:
                    self.prototypes = torch.cat([self.prototypes, self.text_prototypes(list(new_classes))])
            else:
                self.prototypes = self.text_prototypes(self.classes)

    # -- learning -------------------------------------------------------------------------------------
    def learn_task(
        self,
        examples: Sequence[LabeledSample],
        class_names: Sequence[str],
        *,
        progress: Callable[[TrainingProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TaskReport:
        """Learns labelled examples of ``class_names``: new classes, or classes already learned (their
        examples add to what is known of them: a domain-incremental task). See the module docstring."""
        started = time.perf_counter()
        names = validate_task(examples, class_names, self.classes)
        new = [n for n in names if n not in self.classes]
        revisited = [n for n in names if n in self.classes]
        report = progress or (lambda p: None)
        training_size = len(examples) + self.strategy.stored_examples()  # what train_task will iterate over
        report(TrainingProgress("preparing", 0, self.config.training.epochs_for(training_size), 0, 0, None))
        rows = {c: i for i, c in enumerate(self.classes + new)}
        labels = [rows[ex.label.strip()] for ex in examples]
        data = self.encode_inputs(examples, field="examples", labels=labels)

        backup = self.clone()
        try:
            task_key = f"task{len(self._tasks) + 1}"
            trains = self.strategy.trains_on(self)  # before before_task, which may add what trains
            self.strategy.before_task(self, task_key)
            steps, last_loss = 0, None
            trained = sum(p.numel() for p in self.trainable_parameters()) if trains else 0
            if trains:
                steps, last_loss = self.strategy.train(self, self.strategy.training_data(self, data), new, report,
                                                       should_stop)
            if self.backbone.projections_trainable:
                self.backbone.projections.requires_grad_(False)
            self._tasks.append(_Task(task_key, new, revisited))
            self._refresh_prototypes(new)
            if self.strategy.replays_features:
                self._record_class_statistics(data, len(new))
            self.strategy.after_task(self, task_key, data)
            if self.head is not None:
                self._learn_head(data)
        except BaseException:
            self.__dict__.update(backup.__dict__)
            raise
        return TaskReport(task_key, tuple(names), len(examples), steps, last_loss,
                          time.perf_counter() - started, trained)

    def receive_classes(self, new_classes: Sequence[str], received: Mapping[str, PathStatistics],
                        thresholds: Mapping[str, torch.Tensor]) -> None:
        """Takes class statistics learned elsewhere over the same frozen features (a district's other
        rooms: service/district.py): the statistics head is solved from this learner's own sums plus
        ``received`` (laid out over ``self.classes + new_classes``), and ``new_classes`` are recorded as
        one received task (``district<N>``). Receiving the same sums again gives the same head."""
        if self.head is None:
            raise StateError(f"the {self.strategy_name!r} strategy has no statistics head to receive classes into")
        self.head.receive(received, thresholds)  # validates first
        if new_classes:
            self._tasks.append(_Task(f"{RECEIVED_TASK}{len(self._tasks) + 1}", list(new_classes)))
            self._refresh_prototypes(list(new_classes))

    def _record_class_statistics(self, data: EncodedBatch, n_classes: int) -> None:
        """Feature statistics of the task just learned, for replay while later tasks train."""
        out = self.fused_features(data)
        self.class_statistics.add_classes({"visual": out.visual.cpu(), "audio": out.audio.cpu()},
                                          {"visual": data.has_image.cpu(), "audio": data.has_audio.cpu()},
                                          data.labels.cpu(), n_classes)

    # -- inference ------------------------------------------------------------------------------------
    @torch.no_grad()
    def infer(self, batch: EncodedBatch, extra_classes: Sequence[str] = ()) -> ForwardOutput:
        """Forward pass over encoded inputs; ``extra_classes`` join the candidates untrained."""
        if not self._tasks and not extra_classes:
            raise StateError("no classes learned yet")
        extra = self.text_prototypes(list(extra_classes)) if extra_classes else None
        if self.head is None or extra_classes:  # untrained classes can only be scored by their prototypes
            return self._forward_in_chunks(batch, extra, scores=True, prototype_scores=self.head is not None)
        out = self._forward_in_chunks(batch, None, scores=False)
        scores, paths, unknown = head_scores(self, self.head, batch, out)
        return replace(out, logits=scores, fusion=replace(out.fusion, path=paths), unknown=unknown)

    @torch.no_grad()
    def fused_features(self, batch: EncodedBatch) -> ForwardOutput:
        """Unimodal and fused features (no class scores needed): ``logits`` is empty."""
        return self._forward_in_chunks(batch, None, scores=False)

    def _forward_in_chunks(self, batch: EncodedBatch, extra: torch.Tensor | None, scores: bool,
                           prototype_scores: bool = False) -> ForwardOutput:
        chunks = [self.forward(b, self.prototypes, extra, scores=scores, prototype_scores=prototype_scores)
                  for b in batch.chunks()]
        return ForwardOutput.concat(chunks)

    def predict(self, samples: Sequence[Sample], top_k: int = 5) -> list[Prediction]:
        """Top-k classes over everything learned so far, for each sample."""
        if not self._tasks:
            raise StateError("no classes learned yet")
        check_top_k(top_k)
        out = self.infer(self.encode_inputs(samples))
        # Prototypes: a softmax over every class. A statistics head: its own scores in [0, 1] (the ridge
        # estimate of each class's indicator, or the cosine to the class mean), not normalised.
        return rank(out.logits, out.fusion.path, out.unknown, self.classes, top_k, normalise=self.head is None)

    # -- copies and persistence -------------------------------------------------------------------
    def clone(self) -> "Learner":
        """An independent learner sharing the frozen backbone (only learned state is copied)."""
        return copy.deepcopy(self)

    def learned_tensors(self) -> dict[str, torch.Tensor]:
        state = {f"backbone.{k}": v for k, v in self.backbone.learned_state().items()}
        state.update({f"fusion.{k}": v for k, v in self.fusion.state_dict().items()})
        return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}

    def restore_tasks(self, tasks: Sequence[tuple[str, list[str]]],
                      revisited: Sequence[list[str]] | None = None) -> None:
        """Records ``(key, classes)`` tasks as learned, in order, without learning anything: for
        loading a saved version (``model/checkpoint.py``), which restores their state."""
        again = list(revisited) if revisited is not None else [[] for _ in tasks]
        self._tasks = [_Task(key, list(classes), list(r)) for (key, classes), r in zip(tasks, again)]

    def save(self, directory: Path) -> None:
        """Writes this version into ``directory`` (``model.checkpoint.save_version``: ``learner.json``
        and safetensors files)."""
        save_version(self, directory)

    @classmethod
    def load(cls, directory: Path, backbone: TriModalBackbone | None = None,
             weights: WeightFiles | None = None) -> "Learner":
        """Loads a saved learner (``model.checkpoint.load_version``); a missing, corrupt or
        mismatched file raises CheckpointError."""
        return load_version(directory, cls, backbone, weights)


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
    strat = create_strategy(strategy)
    if backbone is None:
        backbone = build_backbone(preset, weights)
        if device is not None:
            backbone.to(torch.device(device))
    elif device is not None and not same_device(backbone.device, torch.device(device)):
        backbone = backbone.copy_on(device)  # the caller's backbone stays where it is
    return Learner(backbone, strat, config or LearnerConfig(), preset)
