"""AAVFM: Pearson masking, both branches, strong-modality choice, missing modalities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from model.fusion import AAVFM, AAVFM_ONLY_FIELDS, PATH_CODES, ConcatFusion, FusionConfig, pearson

E = 8


def run(module: torch.nn.Module, v: torch.Tensor, a: torch.Tensor, has_v=None, has_a=None):
    n = v.shape[0]
    has_v = torch.ones(n, dtype=torch.bool) if has_v is None else has_v
    has_a = torch.ones(n, dtype=torch.bool) if has_a is None else has_a
    prototypes = torch.nn.functional.normalize(torch.eye(3, E), dim=-1)
    return module(v, a, has_v, has_a, prototypes, 10.0)


def test_pearson_matches_numpy() -> None:
    v, a = torch.randn(4, E), torch.randn(4, E)
    expected = [np.corrcoef(v[i].numpy(), a[i].numpy())[0, 1] for i in range(4)]
    assert torch.allclose(pearson(v, a), torch.tensor(expected, dtype=torch.float32), atol=1e-5)


def test_both_branches_are_taken_in_one_batch() -> None:
    torch.manual_seed(0)
    v = torch.randn(6, E)
    a = torch.cat([v[:3] * 2 + 0.01 * torch.randn(3, E), torch.randn(3, E)])  # r ~ 1, then r ~ 0
    out = run(AAVFM(E, FusionConfig(threshold=0.8, strong_modality="visual")), v, a)
    assert out.path.tolist() == [PATH_CODES["av"]] * 3 + [PATH_CODES["visual"]] * 3
    assert torch.equal(out.fused[3:], v[3:])  # weak modality masked: the visual feature itself
    assert not torch.equal(out.fused[:3], v[:3])  # fused: weighted cross-attention of both


def test_fusion_branch_is_a_convex_mix_before_training() -> None:
    v = torch.randn(2, E)
    fused = AAVFM(E, FusionConfig(threshold=-1.0, unit_inputs=False)).fuse(v, v * 3)
    # attention weights and modality weights are convex; the MLP starts at zero
    assert torch.allclose(fused, v * (0.5 * torch.softmax(torch.stack([v.pow(2).sum(1) * 0.5 / E ** 0.5,
                                                                          v.pow(2).sum(1) * 1.5 / E ** 0.5]), 0)
                                      * torch.tensor([[1.0], [3.0]])).sum(0).unsqueeze(1), atol=1e-5)


@pytest.mark.parametrize("strong, expected", [("visual", "visual"), ("audio", "audio")])
def test_configured_strong_modality(strong: str, expected: str) -> None:
    v, a = torch.randn(4, E), torch.randn(4, E)
    out = run(AAVFM(E, FusionConfig(threshold=1.0, strong_modality=strong)), v, a)
    assert out.path.tolist() == [PATH_CODES[expected]] * 4


def test_auto_picks_the_more_confident_modality_per_sample() -> None:
    sharp, flat = torch.zeros(2, E), torch.zeros(2, E)
    sharp[:, 0] = 1.0  # points at prototype 0: confident
    flat[:, :3] = 1.0  # equally close to three prototypes: unsure
    v = torch.stack([sharp[0], flat[0]])
    a = torch.stack([flat[1], sharp[1]])
    out = run(AAVFM(E, FusionConfig(threshold=1.0, strong_modality="auto")), v, a)
    assert out.path.tolist() == [PATH_CODES["visual"], PATH_CODES["audio"]]


@pytest.mark.parametrize("module", [AAVFM(E, FusionConfig()), ConcatFusion(E, FusionConfig(kind="concat"))])
def test_one_modality_samples_take_their_own_path(module: torch.nn.Module) -> None:
    v, a = torch.randn(2, E), torch.randn(2, E)
    out = run(module, v, a, has_v=torch.tensor([True, False]), has_a=torch.tensor([False, True]))
    assert out.path.tolist() == [PATH_CODES["visual"], PATH_CODES["audio"]]
    assert torch.equal(out.fused[0], v[0]) and torch.equal(out.fused[1], a[1])


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="threshold"):
        FusionConfig(threshold=2.0)
    with pytest.raises(ValueError, match="strong_modality"):
        FusionConfig(strong_modality="loudest")  # type: ignore[arg-type]


def test_unit_inputs_keep_the_attention_from_saturating_on_large_features() -> None:
    """With feature norms like lite's (about 20 and 14), raw inputs leave sound out of the fused
    feature: swapping the audio barely changes it. Unit inputs let it through."""
    torch.manual_seed(0)
    v = 20 * F.normalize(torch.randn(8, E), dim=-1)
    a, other_a = (14 * F.normalize(torch.randn(8, E), dim=-1) for _ in range(2))

    def audio_effect(config: FusionConfig) -> torch.Tensor:
        module = AAVFM(E, config)
        with torch.no_grad():
            fused, swapped = module.fuse(v, a), module.fuse(v, other_a)
        return (fused - swapped).norm(dim=-1) / fused.norm(dim=-1)  # per sample

    assert audio_effect(FusionConfig(threshold=-1.0, unit_inputs=False)).max() < 1e-4
    assert audio_effect(FusionConfig(threshold=-1.0)).min() > 0.1  # the default


def test_concatenation_ignores_the_aavfm_only_settings() -> None:
    assert AAVFM_ONLY_FIELDS <= set(FusionConfig.__dataclass_fields__) - {"kind"}
    v, a = torch.randn(6, E) * 5, torch.randn(6, E)
    torch.manual_seed(0)
    plain = run(ConcatFusion(E, FusionConfig(kind="concat")), v, a)
    torch.manual_seed(0)
    other = FusionConfig(kind="concat", threshold=0.9, strong_modality="audio", mlp_ratio=4.0, unit_inputs=False)
    changed = run(ConcatFusion(E, other), v, a)
    assert torch.equal(plain.fused, changed.fused) and torch.equal(plain.path, changed.path)
