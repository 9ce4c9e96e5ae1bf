"""The class-incremental evaluation protocol of docs/metrics.md, shared by the benchmark and daemon.

For each task t, around ``learner.learn_task``:

    evaluation.before_task(learner, new_classes, held_out_t)    # z[t]: current model, new classes
                                                                 # added untrained; b[t]: untrained model
    learner.learn_task(train_t, new_classes)
    evaluation.after_task(learner, held_out_by_task, train_t)   # row t of a per path, A_t, w_t, NMI

Every held-out sample is scored three times, once per modality path (``av``: as given; ``visual``:
its image only; ``audio``: its audio only), always over every class seen so far. A path is recorded
only if every held-out sample has the inputs it needs. The record (:class:`model.record.
ContinualRecord`) is the single stored object every reported figure is computed from.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from model.batch import EncodedBatch
from model.errors import InvalidInputError
from model.fusion import PATH_CODES
from model.learner import Learner
from model.metrics import clustering_nmi, task_similarity
from model.record import ContinualRecord
from model.samples import PATHS, LabeledSample


def restrict(batch: EncodedBatch, path: str) -> EncodedBatch:
    """The same encoded samples with one modality hidden (``visual``/``audio``), or as given (``av``)."""
    has_image = batch.has_image if path != "audio" else torch.zeros_like(batch.has_image)
    has_audio = batch.has_audio if path != "visual" else torch.zeros_like(batch.has_audio)
    return EncodedBatch(batch.images, batch.audio, has_image, has_audio, batch.labels)


def available_paths(samples: Sequence[LabeledSample]) -> list[str]:
    both = all(s.image is not None and s.audio is not None for s in samples)
    images = all(s.image is not None for s in samples)
    audio = all(s.audio is not None for s in samples)
    return [p for p, ok in zip(PATHS, (both, images, audio)) if ok]


class ContinualEvaluation:
    """Accumulates the accuracy matrices and figures of one class-incremental run."""

    def __init__(self, baseline: Learner | None = None, seed: int = 0) -> None:
        self.record = ContinualRecord(seed=seed)
        self.baseline = baseline  # an untrained learner (for b[t]); None: FWT is not measured
        self._z: dict[str, float] | None = None
        self._b: dict[str, float] | None = None
        self._feature_sums: list[list[float]] = []  # per task: sum of unit visual features
        self._feature_counts: list[int] = []
        self._encoded: dict[int, EncodedBatch] = {}
        # After each task: the share of held-out pairs (all tasks so far) that AAVFM fused, not
        # answered from one modality. Strategies with concatenation fusion fuse every pair (1.0).
        self.fused_share: list[float] = []

    # -- helpers ------------------------------------------------------------------------------------
    def _encode(self, learner: Learner, samples: Sequence[LabeledSample], key: int | None) -> EncodedBatch:
        if key is not None and key in self._encoded:
            return self._encoded[key]
        batch = learner.encode_inputs([s.only("av") for s in samples], field="held_out")
        if key is not None:
            self._encoded[key] = batch
        return batch

    @staticmethod
    def _accuracy(learner: Learner, batch: EncodedBatch, truth: Sequence[str], path: str,
                  extra_classes: Sequence[str] = ()) -> tuple[float, int]:
        """Accuracy in percent, and how many samples took the fusion branch (only ``av`` can)."""
        out = learner.infer(restrict(batch, path), extra_classes)
        names = learner.classes + list(extra_classes)
        predicted = [names[i] for i in out.logits.argmax(dim=-1).tolist()]
        fused = int((out.fusion.path == PATH_CODES["av"]).sum())
        return 100.0 * sum(p == t for p, t in zip(predicted, truth)) / len(truth), fused

    def accuracies(self, learner: Learner, held_out_by_task: Sequence[Sequence[LabeledSample]]
                   ) -> dict[str, list[float]]:
        """``{path: [accuracy of task j]}`` of ``learner`` now, recording nothing (e.g. after it received
        classes from elsewhere: service/district.py)."""
        paths = available_paths([s for h in held_out_by_task for s in h])
        batches = [self._encode(learner, h, None) for h in held_out_by_task]
        return {p: [self._accuracy(learner, b, [s.label for s in h], p)[0] for b, h in zip(batches, held_out_by_task)]
                for p in paths}

    # -- the protocol -----------------------------------------------------------------------------
    def before_task(self, learner: Learner, class_names: Sequence[str], held_out: Sequence[LabeledSample]) -> None:
        """Measures z (current model) and b (untrained model) on the coming task, for FWT."""
        self._z = self._b = None
        if not learner.classes or not held_out:
            return
        batch = self._encode(learner, held_out, None)
        truth = [s.label for s in held_out]
        paths = available_paths(held_out)
        self._z = {p: self._accuracy(learner, batch, truth, p, class_names)[0] for p in paths}
        if self.baseline is not None:
            everything = learner.classes + list(class_names)
            self._b = {p: self._accuracy(self.baseline, batch, truth, p, everything)[0] for p in paths}

    def after_task(self, learner: Learner, held_out_by_task: Sequence[Sequence[LabeledSample]],
                   train_examples: Sequence[LabeledSample], task_name: Sequence[str] | None = None) -> None:
        """Adds row t of every path's accuracy matrix, A_t, w_t and the NMI terms of M2. ``task_name``:
        what the record calls the task (default: its new classes); a domain-incremental task, which
        brings no new class, is named by its domain (``["speaker george"]``)."""
        t = learner.taught_tasks  # classes received from elsewhere have no held-out examples here
        if len(held_out_by_task) != t:
            raise InvalidInputError("held_out_by_task", f"{len(held_out_by_task)} held-out sets for {t} taught tasks")
        if any(len(h) == 0 for h in held_out_by_task):
            raise InvalidInputError("held_out_by_task", "every task needs at least one held-out sample")
        paths = available_paths([s for h in held_out_by_task for s in h])
        batches = [self._encode(learner, h, j) for j, h in enumerate(held_out_by_task)]
        scored = {p: [self._accuracy(learner, b, [s.label for s in h], p) for b, h in zip(batches, held_out_by_task)]
                  for p in paths}
        rows = {p: [accuracy for accuracy, _ in row] for p, row in scored.items()}
        if "av" in scored:
            self.fused_share.append(sum(f for _, f in scored["av"]) / sum(len(h) for h in held_out_by_task))
        similarity = self._task_similarity(learner, train_examples)
        name = list(task_name) if task_name is not None else learner.tasks[-1]
        self.record.add_task(name, len(held_out_by_task[-1]), rows, z=self._z, b=self._b,
                             similarity=similarity)
        self._update_nmi(learner, batches)
        self._z = self._b = None

    def _task_similarity(self, learner: Learner, train_examples: Sequence[LabeledSample]) -> float:
        """w_t (docs/metrics.md): semantic and visual-feature cosine of task t to tasks 1..t-1."""
        images = [s for s in train_examples if s.image is not None]
        if images:
            visual = learner.fused_features(learner.encode_inputs([s.only("visual") for s in images])).visual
            unit = F.normalize(visual, dim=-1)
            self._feature_sums.append(unit.sum(dim=0).tolist())
            self._feature_counts.append(len(images))
        else:
            self._feature_sums.append([0.0] * learner.backbone.embed_dim)
            self._feature_counts.append(0)
        if len(learner.tasks) < 2:
            return 0.0
        protos = learner.prototypes.cpu().numpy()
        n_new = len(learner.tasks[-1])
        # A task of known classes only (domain-incremental) names the classes seen before: s_sem = 1.
        s_sem = 1.0 if n_new == 0 else _cosine(protos[-n_new:].mean(axis=0), protos[:-n_new].mean(axis=0))
        sums = np.array(self._feature_sums)
        counts = np.array(self._feature_counts, dtype=float)
        if counts[-1] == 0 or counts[:-1].sum() == 0:
            return task_similarity(s_sem, 0.0)
        s_feat = _cosine(sums[-1] / counts[-1], sums[:-1].sum(axis=0) / counts[:-1].sum())
        return task_similarity(s_sem, s_feat)

    def _update_nmi(self, learner: Learner, batches: Sequence[EncodedBatch]) -> None:
        """NMI between k-means clusterings of fused and visual (audio) features of all held-out samples."""
        everything = EncodedBatch.concat(list(batches))
        if not bool((everything.has_image & everything.has_audio).all()):
            return
        out = learner.fused_features(everything)
        k = len(learner.classes)
        fused, visual, audio = (F.normalize(x, dim=-1).cpu().numpy() for x in (out.fused, out.visual, out.audio))
        if len(fused) < k:
            return
        self.record.nmi_fv = clustering_nmi(fused, visual, k, seed=self.record.seed)
        self.record.nmi_fa = clustering_nmi(fused, audio, k, seed=self.record.seed)

    # -- persistence ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"record": self.record.to_dict(), "feature_sums": self._feature_sums,
                "feature_counts": self._feature_counts, "fused_share": self.fused_share}

    @classmethod
    def from_dict(cls, data: dict[str, Any], baseline: Learner | None = None) -> "ContinualEvaluation":
        evaluation = cls(baseline=baseline)
        evaluation.record = ContinualRecord.from_dict(data["record"])
        evaluation._feature_sums = [list(map(float, s)) for s in data.get("feature_sums", [])]
        evaluation._feature_counts = [int(c) for c in data.get("feature_counts", [])]
        evaluation.fused_share = [float(x) for x in data.get("fused_share", [])]
        return evaluation


def _cosine(u: np.ndarray, v: np.ndarray) -> float:
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    return 0.0 if nu == 0 or nv == 0 else float(u @ v / (nu * nv))
