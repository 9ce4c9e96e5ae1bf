"""``python -m export.trt`` and the engine cache, as far as they run without TensorRT.

The engine build itself needs TensorRT and a GPU. Here: the command's argument handling and its
one-line failure, the engine keys (TensorRT version, compute capability, ONNX hash, precision,
profiles), the rebuild-when-stale logic with a stand-in builder (TensorRT is not installed, so no
real builder can run), and the profile shapes derived from real manifests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from export import tensorrt_runner
from export.engines import ENGINE_INDEX, EngineKey, Profile, engine_keys, ensure_engines, profile_shapes
from export.errors import RunnerUnavailableError
from export.manifest import Manifest, SegmentEntry
from export.trt import EXIT_MISSING, main


def tensorrt_missing() -> str | None:
    try:
        tensorrt_runner.check_available()
    except RunnerUnavailableError as exc:
        return exc.missing
    return None


@pytest.mark.skipif(tensorrt_missing() is None, reason="TensorRT and a GPU are present")
def test_command_fails_fast_with_one_line_naming_what_is_missing(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "engines"
    assert main(["--preset", "tiny", "--out", str(out)]) == EXIT_MISSING
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("export.trt: cannot build engines: ")
    assert ("tensorrt" in err[0]) or ("CUDA GPU" in err[0])
    assert not out.exists()  # nothing exported before the check


def _onnxruntime_tensorrt() -> bool:
    import onnxruntime as ort

    return "TensorrtExecutionProvider" in ort.get_available_providers()


def _a_base(folder: Path) -> Path:
    folder.mkdir()
    (folder / "base.json").write_text(json.dumps({"format": 2, "digest": "0" * 64, "sha256": {}}))
    return folder


@pytest.mark.skipif(_onnxruntime_tensorrt(), reason="ONNX Runtime's TensorRT provider is installed here")
def test_engines_of_a_base_fail_fast_with_one_line_naming_what_is_missing(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    base = _a_base(tmp_path / "base")
    assert main(["--base", str(base), "--precision", "fp16"]) == EXIT_MISSING
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("export.trt: cannot build engines: ")
    assert "TensorrtExecutionProvider" in err[0] and "onnxruntime-gpu" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]  # no engine folder made
    # what the daemon runs in its child: the same command, without the exporter's PyTorch
    code = ("import runpy, sys; sys.argv = ['export.trt_base', '--base', sys.argv[1]]\n"
            "try:\n    runpy.run_module('export.trt_base', run_name='__main__')\n"
            "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(base)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.split() == [str(EXIT_MISSING), "False"], done.stderr


@pytest.mark.parametrize("argv,message", [
    (["--base", "/no/such/base"], "--base: no base in /no/such/base"),
    (["--base", "BASE", "--device", "-1"], "--device: a GPU number is >= 0"),
    (["--base", "BASE", "--precision", "int8"], "invalid choice"),
])
def test_engines_of_a_base_reject_bad_arguments(argv: list[str], message: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    base = _a_base(tmp_path / "base")
    with pytest.raises(SystemExit) as exit_:
        main([str(base) if a == "BASE" else a for a in argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--preset", "tiny"], "--out"),
    (["--preset", "nope", "--out", "x"], "unknown 'nope'"),
    (["--preset", "tiny", "--out", "x", "--profile", "8:4:2"], "min <= opt <= max"),
    (["--preset", "tiny", "--out", "x", "--profile", "1-8-32"], "MIN:OPT:MAX"),
    (["--preset", "tiny", "--out", "x", "--precision", "int8"], "invalid choice"),
    (["--preset", "tiny", "--out", "x", "--weights", "clip=/missing.pt"], "does not exist"),
])
def test_command_rejects_bad_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_profiles_parse_and_cover_batches() -> None:
    p = Profile.parse("1:8:32")
    assert (p.min, p.opt, p.max) == (1, 8, 32)
    assert p.covers(1) and p.covers(32) and not p.covers(33)
    with pytest.raises(ValueError):
        Profile(0, 1, 2)


def test_engine_key_changes_with_everything_that_invalidates_a_plan() -> None:
    base = EngineKey("image.block.0", "ab" * 32, "fp16", "10.3.0", "8.9", (Profile(1, 8, 32),))
    variants = [
        EngineKey("image.block.0", "cd" * 32, "fp16", "10.3.0", "8.9", (Profile(1, 8, 32),)),
        EngineKey("image.block.0", "ab" * 32, "fp32", "10.3.0", "8.9", (Profile(1, 8, 32),)),
        EngineKey("image.block.0", "ab" * 32, "fp16", "10.4.0", "8.9", (Profile(1, 8, 32),)),
        EngineKey("image.block.0", "ab" * 32, "fp16", "10.3.0", "9.0", (Profile(1, 8, 32),)),
        EngineKey("image.block.0", "ab" * 32, "fp16", "10.3.0", "8.9", (Profile(1, 16, 64),)),
    ]
    names = {base.plan_name(), *(v.plan_name() for v in variants)}
    assert len(names) == 6
    assert base.plan_name().startswith("image.block.0.fp16.sm89.trt10.3.0.")


class StandInBuilder:
    """Writes a plan that records its key: TensorRT is not installed here, the cache logic is what is tested."""

    def __init__(self) -> None:
        self.built: list[str] = []

    def __call__(self, onnx_path: Path, entry: SegmentEntry, key: EngineKey, timing_cache: Path) -> bytes:
        assert onnx_path.is_file()
        self.built.append(entry.name)
        return json.dumps({"segment": entry.name, "key": key.digest()}).encode()


@pytest.mark.slow
def test_engines_are_rebuilt_only_when_stale(tiny_export: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "artifacts"
    shutil.copytree(tiny_export, folder)
    manifest = Manifest.load(folder)
    names = [s.name for s in manifest.segments]
    build = StandInBuilder()

    keys = engine_keys(manifest, "fp32", "10.3.0", "8.9")
    plans, rebuilt = ensure_engines(manifest, folder, keys, build)
    assert rebuilt == names and set(plans) == set(names)
    assert all(p.is_file() for p in plans.values())
    index = json.loads((folder / ENGINE_INDEX).read_text())
    assert set(index) == set(names)

    _, rebuilt = ensure_engines(manifest, folder, keys, build)
    assert rebuilt == []  # current: nothing rebuilt

    plans["text.head"].write_bytes(b"damaged")
    _, rebuilt = ensure_engines(manifest, folder, keys, build)
    assert rebuilt == ["text.head"]

    newer = engine_keys(manifest, "fp32", "10.4.0", "8.9")  # a TensorRT upgrade invalidates every plan
    new_plans, rebuilt = ensure_engines(manifest, folder, newer, build)
    assert rebuilt == names
    assert not any(p.exists() for p in plans.values())  # stale plans are removed
    assert all(p.is_file() for p in new_plans.values())

    _, rebuilt = ensure_engines(manifest, folder, newer, build, force=True)
    assert rebuilt == names


@pytest.mark.slow
def test_profile_shapes_follow_the_manifest(tiny_export: Path, lite_export: Path) -> None:
    tiny = Manifest.load(tiny_export)
    shapes = profile_shapes(tiny.segment("text.block.0"), Profile(1, 8, 32))
    low, opt, high = shapes["x"]
    assert low[0] == 1 and opt[0] == 8 and high[0] == 32 and low[1:] == opt[1:] == high[1:]
    assert set(shapes) == {"x", "ctx"}

    lite = Manifest.load(lite_export)
    entry = lite.segment("text.stem")
    assert entry.max_sequence is not None
    low, opt, high = profile_shapes(entry, Profile(1, 8, 32))["tokens"]
    assert low == (1, 1) and high == (32, entry.max_sequence) and opt[1] <= entry.max_sequence
    assert "audio.encoder" not in engine_keys(lite, "fp32", "10.3.0", "8.9")  # already ONNX: no engine


def test_tensorrt_runner_imports_without_tensorrt() -> None:
    missing = tensorrt_missing()
    if missing is None:
        pytest.skip("TensorRT and a GPU are present")
    with pytest.raises(RunnerUnavailableError):
        tensorrt_runner.check_available()
