"""The ``tiny`` and ``audioclip`` presets: determinism, shapes, strict loading of OpenAI CLIP files."""

from __future__ import annotations

import dataclasses
import time
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from model.backbone import WeightFiles, build_backbone, preset_names
from model.config import BackboneConfig
from model.encoders.checkpoints import CLIP_IGNORED_KEYS, read_state_dict
from model.encoders.clip import build_text_transformer, build_vision_transformer
from model.encoders.esresnext import ESResNeXtFBSP
from model.errors import CheckpointError, InvalidInputError
from model.presets.clip_family import AUDIOCLIP_CONFIG, TINY_CONFIG, build_clip_family, build_from_files


def test_presets_are_registered() -> None:
    assert {"tiny", "audioclip"} <= set(preset_names())


def test_tiny_builds_bit_identically_without_touching_the_global_rng() -> None:
    rng_before = torch.get_rng_state()
    a, b = build_backbone("tiny"), build_backbone("tiny")
    assert torch.equal(torch.get_rng_state(), rng_before)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_seed_changes_the_weights() -> None:
    a = build_clip_family(TINY_CONFIG)
    b = build_clip_family(dataclasses.replace(TINY_CONFIG, seed=1))
    assert not torch.equal(a.image.stem.conv1.weight, b.image.stem.conv1.weight)


def test_tiny_builds_fast() -> None:
    build_backbone("tiny")  # imports done
    start = time.perf_counter()
    build_backbone("tiny")
    assert time.perf_counter() - start < 1.0


def test_tiny_feature_shapes() -> None:
    backbone = build_backbone("tiny")
    assert (backbone.image_size, backbone.sample_rate, backbone.clip_samples) == (32, 16000, 16000)
    images = backbone.prepare_images([np.zeros((40, 50, 3), np.uint8), np.full((32, 32), 200, np.uint8)])
    waves = [np.zeros(8000, np.float32), np.ones(44100, np.float32) * 0.1]
    audio = backbone.prepare_audio(waves, [16000, 44100])
    with torch.no_grad():
        assert backbone.encode_image(images).shape == (2, 32)
        assert backbone.encode_audio_raw(audio).shape == (2, 64)
        assert backbone.encode_audio(audio).shape == (2, 32)
        assert backbone.encode_text(["a teacher lecturing", "applause", "a raised hand"]).shape == (3, 32)
    tokens = backbone.tokenizer(["applause"])
    assert tokens.shape == (1, 32) and tokens.dtype == torch.long


def test_tiny_projection_is_frozen_with_orthonormal_rows() -> None:
    backbone = build_backbone("tiny")
    p = backbone.projections["audio"].weight  # (32, 64)
    assert not p.requires_grad
    torch.testing.assert_close(p @ p.T, torch.eye(32), atol=1e-5, rtol=0)
    assert all(not t.requires_grad for t in backbone.audio.parameters())


# -- OpenAI CLIP layout ------------------------------------------------------------------------
def openai_layout_state(
    config: BackboneConfig, seed: int
) -> tuple[dict[str, torch.Tensor], nn.Module, nn.Module]:
    """Random open_clip modules of ``config``'s size and their tensors under OpenAI's CLIP names."""
    torch.manual_seed(seed)
    vit = build_vision_transformer(config.vision, config.embed_dim).eval()
    text = build_text_transformer(config.text, config.embed_dim).eval()
    state = {f"visual.{k}": v.clone() for k, v in vit.state_dict().items()}
    state.update({k: v.clone() for k, v in text.state_dict().items()})
    state["logit_scale"] = torch.tensor(4.6052)
    state["input_resolution"] = torch.tensor(config.vision.image_size)
    state["context_length"] = torch.tensor(config.text.context_length)
    state["vocab_size"] = torch.tensor(config.text.vocab_size)
    return state, vit, text


def torchscript_archive(state: dict[str, torch.Tensor], path) -> None:
    """Writes ``state`` as OpenAI releases CLIP: a TorchScript module tree holding the tensors."""
    root = nn.Module()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        module = root
        for name in parents:
            if not hasattr(module, name):
                module.add_module(name, nn.Module())
            module = getattr(module, name)
        if value.is_floating_point() and value.dim() > 0:
            module.register_parameter(leaf, nn.Parameter(value.half(), requires_grad=False))
        else:
            module.register_buffer(leaf, value)
    with warnings.catch_warnings():  # scripting is deprecated; it is how the released files were made
        warnings.filterwarnings("ignore", r"`torch\.jit\.(script|save)` is deprecated", DeprecationWarning)
        torch.jit.save(torch.jit.script(root), str(path))


def audioclip_file(path, seed: int) -> ESResNeXtFBSP:
    torch.manual_seed(seed)
    encoder = ESResNeXtFBSP(TINY_CONFIG.audio).eval()
    state = {f"audio.{k}": v for k, v in encoder.state_dict().items()}
    torch.save(state | {"logit_scale_at": torch.ones(())}, path)
    return encoder


@pytest.mark.parametrize("fmt", ["torch", "torchscript-fp16", "safetensors"])
def test_clip_and_audioclip_files_load_strictly(tmp_path, fmt) -> None:
    state, vit, text = openai_layout_state(TINY_CONFIG, seed=7)
    if fmt == "torch":
        clip_path = tmp_path / "clip.pt"
        torch.save(state, clip_path)
    elif fmt == "safetensors":
        clip_path = tmp_path / "clip.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(clip_path))
    else:
        clip_path = tmp_path / "ViT-B-16.pt"
        torchscript_archive(state, clip_path)
        vit.load_state_dict({k[7:]: v.half().float() for k, v in state.items() if k.startswith("visual.")})
        text.half().float()
    audio_path = tmp_path / "audioclip.pt"
    audio = audioclip_file(audio_path, seed=8)

    backbone = build_from_files(clip_path, audio_path, config=TINY_CONFIG).eval()
    images = torch.randn(2, 3, 32, 32)
    waves = torch.randn(2, 16000) * 0.1
    tokens = backbone.tokenizer(["applause", "a teacher lecturing"])
    with torch.no_grad():
        # No experts yet: each tower computes exactly its open_clip module.
        torch.testing.assert_close(backbone.encode_image(images), vit(images), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(backbone.text(tokens), text(tokens), rtol=1e-5, atol=1e-5)
        assert torch.equal(backbone.encode_audio_raw(waves), audio(waves))


def test_projection_file_loads_and_is_checked(tmp_path) -> None:
    state, _, _ = openai_layout_state(TINY_CONFIG, seed=7)
    clip_path, audio_path, p_path = tmp_path / "clip.pt", tmp_path / "audioclip.pt", tmp_path / "p.pt"
    torch.save(state, clip_path)
    audioclip_file(audio_path, seed=8)
    weight = torch.randn(32, 64)
    torch.save({"weight": weight}, p_path)
    backbone = build_from_files(clip_path, audio_path, p_path, config=TINY_CONFIG)
    assert torch.equal(backbone.projections["audio"].weight, weight)
    torch.save({"weight": torch.randn(64, 32)}, p_path)
    with pytest.raises(CheckpointError) as info:
        build_from_files(clip_path, audio_path, p_path, config=TINY_CONFIG)
    assert info.value.key == "weight" and "(64, 32)" in str(info.value) and "(32, 64)" in str(info.value)


@pytest.mark.parametrize(
    "edit, key, words",
    [
        (lambda s: s.pop("visual.ln_post.weight"), "visual.ln_post.weight", "missing"),
        (lambda s: s.pop("ln_final.bias"), "ln_final.bias", "missing"),
        (
            lambda s: s.__setitem__("visual.attnpool.c_proj.weight", torch.ones(2)),
            "visual.attnpool.c_proj.weight",
            "unexpected",
        ),
        (lambda s: s.__setitem__("logit_scale_ai", torch.ones(())), "logit_scale_ai", "unexpected"),
        (lambda s: s.__setitem__("transformer.resblocks.1.attn.in_proj_weight", torch.ones(3, 32)),
         "transformer.resblocks.1.attn.in_proj_weight", "(3, 32)"),
    ],
    ids=["missing-visual", "missing-text", "unexpected-visual", "unexpected-top", "mis-shaped"],
)
def test_mismatched_clip_file_names_the_key(tmp_path, edit, key, words) -> None:
    state, _, _ = openai_layout_state(TINY_CONFIG, seed=7)
    edit(state)
    clip_path, audio_path = tmp_path / "clip.pt", tmp_path / "audioclip.pt"
    torch.save(state, clip_path)
    audioclip_file(audio_path, seed=8)
    with pytest.raises(CheckpointError) as info:
        build_from_files(clip_path, audio_path, config=TINY_CONFIG)
    assert info.value.key == key
    assert words in str(info.value) and str(clip_path) in str(info.value)


def test_unreadable_file_is_a_checkpoint_error(tmp_path) -> None:
    path = tmp_path / "clip.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="clip.pt"):
        read_state_dict(path)


# -- audioclip -----------------------------------------------------------------------------------
def openai_vit_b16_contract() -> dict[str, tuple[int, ...]]:
    """OpenAI CLIP ViT-B/16's tensors (besides the ignored metadata), from its released architecture:
    vision width 768, 12 layers, patch 16 at 224 px; text width 512, 12 layers, 77 tokens; 512-d."""
    keys: dict[str, tuple[int, ...]] = {
        "visual.class_embedding": (768,),
        "visual.positional_embedding": (197, 768),
        "visual.proj": (768, 512),
        "visual.conv1.weight": (768, 3, 16, 16), "visual.ln_pre.weight": (768,), "visual.ln_pre.bias": (768,),
        "visual.ln_post.weight": (768,), "visual.ln_post.bias": (768,),
        "token_embedding.weight": (49408, 512),
        "positional_embedding": (77, 512),
        "text_projection": (512, 512),
        "ln_final.weight": (512,), "ln_final.bias": (512,),
    }
    for prefix, d in (("visual.transformer", 768), ("transformer", 512)):
        for i in range(12):
            p = f"{prefix}.resblocks.{i}"
            keys |= {
                f"{p}.attn.in_proj_weight": (3 * d, d), f"{p}.attn.in_proj_bias": (3 * d,),
                f"{p}.attn.out_proj.weight": (d, d), f"{p}.attn.out_proj.bias": (d,),
                f"{p}.ln_1.weight": (d,), f"{p}.ln_1.bias": (d,),
                f"{p}.ln_2.weight": (d,), f"{p}.ln_2.bias": (d,),
                f"{p}.mlp.c_fc.weight": (4 * d, d), f"{p}.mlp.c_fc.bias": (4 * d,),
                f"{p}.mlp.c_proj.weight": (d, 4 * d), f"{p}.mlp.c_proj.bias": (d,),
            }
    return keys


def test_audioclip_image_and_text_modules_have_exactly_openai_vit_b16_tensors() -> None:
    with torch.device("meta"):
        vit = build_vision_transformer(AUDIOCLIP_CONFIG.vision, AUDIOCLIP_CONFIG.embed_dim)
        text = build_text_transformer(AUDIOCLIP_CONFIG.text, AUDIOCLIP_CONFIG.embed_dim)
    ours = {f"visual.{k}": tuple(v.shape) for k, v in vit.state_dict().items()}
    ours |= {k: tuple(v.shape) for k, v in text.state_dict().items()}
    assert ours == openai_vit_b16_contract()
    assert CLIP_IGNORED_KEYS == {"logit_scale", "input_resolution", "context_length", "vocab_size"}
    assert AUDIOCLIP_CONFIG.audio.output_dim == 1024 and AUDIOCLIP_CONFIG.embed_dim == 512
    assert AUDIOCLIP_CONFIG.audio.clip_samples == 220500


def test_audioclip_without_weight_files_names_the_field(tmp_path) -> None:
    with pytest.raises(ValueError) as info:
        build_backbone("audioclip")
    assert isinstance(info.value, InvalidInputError) and info.value.field == "weights.clip"
    assert "WeightFiles.clip" in str(info.value)

    clip = tmp_path / "ViT-B-16.pt"
    clip.write_bytes(b"")
    with pytest.raises(InvalidInputError) as info:
        build_backbone("audioclip", WeightFiles(clip=clip))
    assert info.value.field == "weights.audioclip"

    with pytest.raises(InvalidInputError) as info:
        build_backbone("audioclip", WeightFiles(clip=tmp_path / "absent.pt", audioclip=clip))
    assert info.value.field == "weights.clip" and "absent.pt" in str(info.value)
