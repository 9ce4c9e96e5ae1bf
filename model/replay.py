"""Class feature statistics, and pseudo-features drawn from them while later tasks train.

Why: without any old data, a new task's text prototypes are trained only to win on the new classes'
inputs. Nothing stops them from also winning on old classes' inputs, and on AV-MNIST with `lite`
they do: after task 2, old samples were still ranked correctly among the old classes (91-98%) but
every one of them scored highest on a new class, although their features had not moved at all on
the audio path (ab927db:docs/benchmarks.md, "Why mcil forgot").

What: after each task the learner records, per class and per modality, the mean and the standard
deviation (per dimension) of the unimodal features ``v = F_v(image)`` and ``a = P(F_a(audio))`` of
that class's training inputs. While a later task trains, each step draws Gaussian pseudo-features
for old classes from these statistics and scores them, through the fusion module, against every
prototype; their cross-entropy joins the loss. New prototypes thereby learn to stay away from
where old classes' features lie. This is prototype augmentation (Zhu et al., "Prototype
Augmentation and Self-Supervision for Incremental Learning", CVPR 2021) applied to the joint space.

Stored: two vectors of ``embed_dim`` per class and modality, not examples (nothing of an input can
be recovered from them). The statistics of a class are frozen with its task, like its prototype.
"""

from __future__ import annotations

import torch

MODALITIES = ("visual", "audio")
MIN_STD = 1e-4


class ClassStatistics:
    """Per-class mean and per-dimension standard deviation of the visual and audio features.

    Rows follow the learner's class order. A class learned without one modality has NaN statistics
    for it and is never drawn for that modality.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.mean = {m: torch.zeros(0, dim) for m in MODALITIES}
        self.std = {m: torch.zeros(0, dim) for m in MODALITIES}

    def __len__(self) -> int:
        return int(self.mean["visual"].shape[0])

    def add_classes(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                    labels: torch.Tensor, n_classes: int) -> None:
        """Appends statistics for classes ``len(self) .. len(self) + n_classes - 1``.

        ``features[m]``: ``(N, dim)`` features of modality ``m``; ``present[m]``: ``(N,)`` bool, where
        the sample has that modality; ``labels``: ``(N,)`` class rows (in the learner's order).
        """
        first = len(self)
        if n_classes == 0:  # a task of known classes: their statistics stay those of their first task
            return
        for m in MODALITIES:
            means, stds = [], []
            for c in range(first, first + n_classes):
                rows = features[m][present[m] & (labels == c)]
                if len(rows) == 0:
                    means.append(torch.full((self.dim,), float("nan")))
                    stds.append(torch.full((self.dim,), float("nan")))
                    continue
                means.append(rows.mean(dim=0))
                stds.append(rows.std(dim=0, unbiased=False).clamp_min(MIN_STD))
            self.mean[m] = torch.cat([self.mean[m], torch.stack(means)])
            self.std[m] = torch.cat([self.std[m], torch.stack(stds)])

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                     torch.Tensor, torch.Tensor]:
        """``n`` pseudo-samples of uniformly drawn classes: ``(v, a, has_v, has_a, labels)``.

        Each gets both modalities where its class has statistics for both (the caller applies
        modality dropout as for real inputs)."""
        labels = torch.randint(len(self), (n,), generator=generator)
        out = []
        for m in MODALITIES:
            mean, std = self.mean[m][labels], self.std[m][labels]
            present = ~mean.isnan().any(dim=-1)
            noise = torch.randn(n, self.dim, generator=generator)
            out.append((torch.where(present.unsqueeze(-1), mean + std * noise, torch.zeros_like(mean)), present))
        (v, has_v), (a, has_a) = out
        return v, a, has_v, has_a, labels

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{m}_{kind}": getattr(self, kind)[m].contiguous() for m in MODALITIES for kind in ("mean", "std")}

    def load_state_dict(self, state: dict[str, torch.Tensor], n_classes: int) -> None:
        """Raises ValueError naming the tensor that is missing or has the wrong shape."""
        for m in MODALITIES:
            for kind in ("mean", "std"):
                key = f"{m}_{kind}"
                if key not in state:
                    raise ValueError(f"{key}: missing")
                if tuple(state[key].shape) != (n_classes, self.dim):
                    raise ValueError(f"{key}: shape {tuple(state[key].shape)}, expected {(n_classes, self.dim)}")
                getattr(self, kind)[m] = state[key].clone()
