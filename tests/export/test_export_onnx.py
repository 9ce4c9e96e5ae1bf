"""ONNX export: the cut, the manifest, reuse of valid exports, the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from export.decompositions import adaptive_max_pool2d
from export.errors import ManifestError
from export.manifest import MANIFEST_NAME, Manifest
from export.onnx import OPSET, ensure_exported, main
from export.segments import backbone_segments
from model.backbone import build_backbone
from tests.export.conftest import add_experts


def test_segments_follow_the_towers_and_the_audio_encoder() -> None:
    backbone = build_backbone("tiny")
    segments = backbone_segments(backbone)
    names = [s.name for s in segments]
    n = len(backbone.image.blocks)
    assert names[: n + 2] == ["image.stem", *[f"image.block.{i}" for i in range(n)], "image.head"]
    assert names[-1] == "audio.encoder"
    sources = [s.source for s in segments]
    assert sources == [*backbone.image.frozen_modules(), *backbone.text.frozen_modules(), backbone.audio]
    text_block = segments[names.index("text.block.0")]
    assert text_block.input_names == ("x", "ctx")  # the text stem passes its token ids on
    assert segments[names.index("image.block.0")].output_names == ("y", "h")


def test_weights_hash_covers_frozen_weights_only() -> None:
    backbone = build_backbone("tiny")
    before = [s.weights_sha256() for s in backbone_segments(backbone)]
    add_experts(backbone, "task1", seed=0)
    assert [s.weights_sha256() for s in backbone_segments(backbone)] == before
    with torch.no_grad():
        backbone.text.blocks[1].block.mlp.c_fc.weight[0, 0] += 1e-3
    after = [s.weights_sha256() for s in backbone_segments(backbone)]
    changed = [s.name for s, a, b in zip(backbone_segments(backbone), after, before) if a != b]
    assert changed == ["text.block.1"]


@pytest.mark.parametrize("shape,out", [((2, 3, 23, 63), (11, 31)), ((1, 2, 7, 5), (3, 4)), ((2, 4, 22, 62), (11, 31))])
def test_adaptive_max_pool_rewrite_matches_pytorch(shape: tuple[int, ...], out: tuple[int, int]) -> None:
    x = torch.randn(shape)
    values, _ = adaptive_max_pool2d(x, list(out))
    assert torch.equal(values, F.adaptive_max_pool2d(x, out))


@pytest.mark.slow
def test_manifest_describes_every_segment(tiny_export: Path) -> None:
    manifest = Manifest.load(tiny_export)
    backbone = build_backbone("tiny")
    assert manifest.preset == "tiny" and manifest.opset == OPSET
    assert set(manifest.versions) == {"torch", "onnx", "onnxscript"}
    assert [s.name for s in manifest.segments] == [s.name for s in backbone_segments(backbone)]
    for s in manifest.segments:
        for spec in (*s.inputs, *s.outputs):
            assert spec.shape[0] == "batch", (s.name, spec)
        assert (tiny_export / s.files["fp32"].path).is_file()
    manifest.check_files(tiny_export, "fp32")
    stem = manifest.segment("image.stem")
    assert stem.inputs[0].shape == ("batch", 3, backbone.image_size, backbone.image_size)
    assert Manifest.from_dict(json.loads(manifest.to_json())) == manifest


@pytest.mark.slow
def test_valid_export_is_reused_after_new_experts(tiny_export: Path) -> None:
    backbone = build_backbone("tiny")
    add_experts(backbone, "task1", seed=3)
    _, exported = ensure_exported(backbone, tiny_export)
    assert not exported


@pytest.mark.slow
def test_manifest_rejects_other_weights_and_changed_files(tiny_export: Path, tmp_path: Path) -> None:
    manifest = Manifest.load(tiny_export)
    backbone = build_backbone("tiny")
    with torch.no_grad():
        backbone.image.blocks[0].block.attn.in_proj_weight.mul_(1.01)
    weights = [(s.name, s.weights_sha256()) for s in backbone_segments(backbone)]
    with pytest.raises(ManifestError) as err:
        manifest.check_weights("tiny", weights)
    assert err.value.field == "segments[1].weights_sha256"
    with pytest.raises(ManifestError, match="preset"):
        manifest.check_weights("lite", weights)

    copy = tmp_path / "copy"
    shutil.copytree(tiny_export, copy)
    with open(copy / manifest.segments[2].files["fp32"].path, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError) as err:
        manifest.check_files(copy, "fp32")
    assert err.value.field == "segments[2].files.fp32"


def test_unreadable_manifest_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"preset": "tiny"}))
    with pytest.raises(ManifestError) as err:
        Manifest.load(tmp_path)
    assert err.value.field == "manifest"


@pytest.mark.parametrize("argv,message", [
    (["--preset", "nope"], "unknown 'nope'"),
    (["--preset", "tiny", "--weights", "clip"], "expected NAME=PATH"),
    (["--preset", "tiny", "--weights", "vae=/x"], "unknown weight file 'vae'"),
    (["--preset", "tiny", "--weights", "clip=/does/not/exist.pt"], "does not exist"),
])
def test_command_line_rejects_bad_arguments(argv: list[str], message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
