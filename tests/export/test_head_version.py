"""``export/base.py`` and ``export/head_version.py``: a base compiled once, versions served as heads over it.

The tiny preset's base (image features only) is built into a folder, loaded, and refused by name when
it is another base's or damaged; a learner's versions answer through it as the learner answers. The
lite preset's base also holds its audio encoder: a process without PyTorch answers raw inputs from the
base's files and a head's files as the learner does.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from export.base import base_digest, export_base
from export.errors import CompileError
from export.head_version import HeadVersion
from model.backbone import TriModalBackbone, build_backbone
from model.learner import create_learner
from model.samples import Sample
from model.synthetic import make_dataset
from serving.base import IMAGE_GRAPH, META_FILE, BaseGraphs
from serving.errors import BaseGraphsError


@pytest.fixture(scope="module")
def tiny_base(tiny_backbone: TriModalBackbone, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-base")
    meta = export_base(tiny_backbone, folder)
    assert meta["digest"] == base_digest(tiny_backbone) and meta["audio"] is None  # tiny: image features only
    assert meta["largest_difference"]["image"] <= 1e-4  # type: ignore[index]
    return folder


def test_every_version_of_a_learner_answers_through_the_base_as_the_learner_does(
        tiny_backbone: TriModalBackbone, tiny_base: Path) -> None:
    base = BaseGraphs.load(tiny_base, threads=1, digest=base_digest(tiny_backbone))
    learner = create_learner("tiny", "mcil", backbone=copy.deepcopy(tiny_backbone))
    data = make_dataset(["red", "green", "blue"], 3, seed=9)
    probe = ([Sample(image=s.image, audio=s.audio, sample_rate=s.sample_rate) for s in data[:5]]
             + [Sample(image=s.image) for s in data[5:7]] + [Sample(audio=s.audio, sample_rate=16000) for s in data[7:]])
    for names, first in ((["red", "green"], 0), (["blue"], 2)):
        learner.learn_task(make_dataset(names, 8, seed=first, first_index=first), names)
        version = HeadVersion.build(learner, base)
        got, want = version.predict(probe, top_k=3), learner.predict(probe, top_k=3)
        for g, w in zip(got, want):
            assert (g.classes, g.path, g.unknown) == (w.classes, w.path, w.unknown)
            assert max(abs(a - b) for a, b in zip(g.scores, w.scores)) <= 1e-4


def test_a_base_of_other_weights_or_damaged_is_refused_by_name(tiny_backbone: TriModalBackbone, tiny_base: Path,
                                                               tmp_path: Path) -> None:
    with pytest.raises(BaseGraphsError) as caught:
        BaseGraphs.load(tiny_base, threads=1, digest="0" * 64)
    assert caught.value.field == f"{META_FILE}.digest"
    other = build_backbone("tiny")  # not a copy: copies share the frozen tensors with the session's backbone
    next(other.image.frozen_modules()[0].parameters()).data.add_(0.01)  # another encoder
    learner = create_learner("tiny", "mcil", backbone=other)
    learner.learn_task(make_dataset(["red", "green"], 8, seed=0), ["red", "green"])
    with pytest.raises(CompileError) as refused:
        HeadVersion.build(learner, BaseGraphs.load(tiny_base, threads=1))
    assert refused.value.field == "base.digest"
    for name in (META_FILE, IMAGE_GRAPH):
        (tmp_path / name).write_bytes((tiny_base / name).read_bytes())
    meta = json.loads((tmp_path / META_FILE).read_text())
    (tmp_path / IMAGE_GRAPH).write_bytes((tiny_base / IMAGE_GRAPH).read_bytes()[:-64])
    with pytest.raises(BaseGraphsError) as damaged:
        BaseGraphs.load(tmp_path, threads=1, digest=meta["digest"])
    assert damaged.value.field == IMAGE_GRAPH


SERVE_WITHOUT_TORCH = """
import json, sys
from pathlib import Path
import numpy as np
from serving.base import BaseGraphs
from serving.features import BaseFeatures
from serving.head import ServedHead

class Raw:
    def __init__(self, image, audio, rate):
        self.image, self.audio, self.sample_rate = image, audio, rate

base_dir, head_dir, inputs, out = (Path(a) for a in sys.argv[1:])
head = ServedHead.load(head_dir)
features = BaseFeatures(BaseGraphs.load(base_dir, threads=1))
data = np.load(inputs)
samples = [Raw(data[f"image{i}"] if f"image{i}" in data else None, data[f"audio{i}"] if f"audio{i}" in data else None,
               int(data["rates"][i]) if f"audio{i}" in data else None) for i in range(len(data["rates"]))]
answers = head.answer(features.of(samples), top_k=3)
torch_loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
out.write_text(json.dumps({"torch": torch_loaded, "answers": [[a.classes, a.scores, a.path, a.unknown] for a in answers]}))
"""


def test_a_lite_version_answers_raw_inputs_without_pytorch_as_its_learner_does(tmp_path: Path) -> None:
    """The lite base holds its audio encoder: a process that imports no PyTorch reads the base and the
    version's head from files and answers pictures and sounds (pairs, alone, other sample rates, a
    recording sent with two pictures) as the learner that committed the version answers them."""
    import subprocess
    import sys

    from tests.export.conftest import skip_unless_preset

    skip_unless_preset("lite")
    learner = create_learner("lite", "mcil")
    learner.learn_task(make_dataset(["red", "green", "blue"], 6, seed=0, image_size=64), ["red", "green", "blue"])
    meta = export_base(learner.backbone, tmp_path / "base")
    assert meta["audio"] == "speech+sounds"
    version = HeadVersion.build(learner, BaseGraphs.load(tmp_path / "base", threads=1))
    assert version.features is not None  # raw inputs -> features without the learner
    version.head.write(tmp_path)
    data = make_dataset(["red", "green", "blue"], 2, seed=5, image_size=48)
    low_rate = data[3].audio[::2].copy()  # the same tone at 8 kHz
    probe = ([Sample(image=s.image, audio=s.audio, sample_rate=s.sample_rate) for s in data[:3]]
             + [Sample(image=data[4].image, audio=data[0].audio, sample_rate=16000),  # data[0]'s recording again
                Sample(image=data[3].image), Sample(audio=low_rate, sample_rate=8000),
                Sample(audio=data[5].audio, sample_rate=16000)])
    arrays = {f"image{i}": s.image for i, s in enumerate(probe) if s.image is not None}
    arrays.update({f"audio{i}": s.audio for i, s in enumerate(probe) if s.audio is not None})
    np.savez(tmp_path / "inputs.npz", rates=np.array([s.sample_rate or 0 for s in probe]), **arrays)
    result = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_TORCH, str(tmp_path / "base"), str(tmp_path),
                             str(tmp_path / "inputs.npz"), str(tmp_path / "out.json")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["torch"] == []
    want = learner.predict(probe, top_k=3)
    assert [a[2] for a in out["answers"]] == [w.path for w in want] == ["av"] * 4 + ["visual", "audio", "audio"]
    for (classes, scores, _, unknown), w in zip(out["answers"], want):
        assert tuple(classes) == w.classes and unknown == w.unknown
        assert max(abs(a - b) for a, b in zip(scores, w.scores)) <= 1e-4
    assert [p.classes for p in version.predict(probe, top_k=3)] == [w.classes for w in want]
    # In int8 (export/int8.py, calibrated on held-out pictures as a daemon keeps them), the image
    # encoder answers close to fp32; the audio encoder stays as it is.
    from export.int8 import build_int8
    from service.store import save_examples
    from serving.base import int8_folder

    (tmp_path / "held_out").mkdir()
    save_examples(tmp_path / "held_out" / "task.safetensors", make_dataset(["red", "green", "blue"], 6, seed=3,
                                                                            image_size=64))
    assert build_int8(tmp_path / "base", tmp_path / "held_out", int8_folder(tmp_path / "base"))["pictures"] == 18
    int8 = BaseGraphs.load(tmp_path / "base", threads=1).with_int8(int8_folder(tmp_path / "base"), threads=1)
    assert int8.precision == "int8" and int8.has_audio
    quantized = HeadVersion.build(learner, int8).predict(probe, top_k=3)
    assert [p.classes[0] for p in quantized] == [w.classes[0] for w in want] and [p.path for p in quantized] == [
        w.path for w in want]
    # The base holds the speech embedding's graph edited to run over whole clips: a serving process
    # does not import the onnx package. One written without it is edited at load; a whole-clip graph
    # that does not answer as the shipped one, or a speech embedding of another graph, is refused by name.
    import hashlib
    import subprocess
    import sys

    from serving.base import SPEECH_FILES, SPEECH_WHOLE_CLIP

    assert SPEECH_WHOLE_CLIP in meta["sha256"]
    check = ("import sys; from pathlib import Path; from serving.base import BaseGraphs; "
             f"BaseGraphs.load(Path({str(tmp_path / 'base')!r}), threads=1); print('onnx' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          timeout=120).stdout.split() == ["False"]
    base_json = tmp_path / "base" / META_FILE

    def rewritten(name: str, data: bytes | None) -> None:
        meta = json.loads(base_json.read_text())
        if data is None:
            del meta["sha256"][name]
        else:
            (tmp_path / "base" / name).write_bytes(data)
            meta["sha256"][name] = hashlib.sha256(data).hexdigest()
        base_json.write_text(json.dumps(meta))

    shipped = (tmp_path / "base" / SPEECH_FILES[1]).read_bytes()
    rewritten(SPEECH_WHOLE_CLIP, None)  # a base from before: edited at load
    assert BaseGraphs.load(tmp_path / "base", threads=1).speech is not None
    rewritten(SPEECH_WHOLE_CLIP, shipped)  # not edited: cannot take a whole clip
    with pytest.raises(BaseGraphsError, match="does not run over a batch of clips") as refused:
        BaseGraphs.load(tmp_path / "base", threads=1)
    assert SPEECH_WHOLE_CLIP in refused.value.field
    rewritten(SPEECH_WHOLE_CLIP, None)
    rewritten(SPEECH_FILES[1], (tmp_path / "base" / SPEECH_FILES[0]).read_bytes())  # another graph
    with pytest.raises(BaseGraphsError, match="expected Pad, Reshape") as refused:
        BaseGraphs.load(tmp_path / "base", threads=1)
    assert SPEECH_FILES[1] in refused.value.field


def _onnxruntime_has(provider: str) -> bool:
    import onnxruntime as ort

    return provider in ort.get_available_providers()


@pytest.mark.skipif(not _onnxruntime_has("CUDAExecutionProvider"),
                    reason="ONNX Runtime's CUDA provider is not installed here (onnxruntime-gpu on a GPU host)")
@pytest.mark.parametrize("where", ["cuda", "tensorrt"])
def test_a_version_over_its_base_on_the_gpu_answers_as_the_learner_does(
        tiny_backbone: TriModalBackbone, tiny_base: Path, tmp_path: Path, where: str) -> None:
    from export.trt import main as trt_main
    from serving.base import TRT_META
    from serving.head_graph import DeviceScores
    from serving.sessions import Placement

    if where == "tensorrt":
        if not _onnxruntime_has("TensorrtExecutionProvider"):
            pytest.skip("ONNX Runtime's TensorRT provider is not installed here")
        assert trt_main(["--base", str(tiny_base), "--precision", "fp32", "--out", str(tmp_path / "engines")]) == 0
        assert json.loads((tmp_path / "engines" / TRT_META).read_text())["base"] == base_digest(tiny_backbone)
    placement = Placement(where, cache=tmp_path / "engines" if where == "tensorrt" else None)
    base = BaseGraphs.load(tiny_base, threads=1, digest=base_digest(tiny_backbone), placement=placement)
    on_cpu = BaseGraphs.load(tiny_base, threads=1, digest=base_digest(tiny_backbone))
    pictures = np.random.Generator(np.random.PCG64(1)).standard_normal((5, 3, base.image_size, base.image_size),
                                                                       dtype=np.float32)
    assert np.abs(base.image_features(pictures) - on_cpu.image_features(pictures)).max() <= 1e-2  # TF32 allowed
    learner = create_learner("tiny", "mcil", backbone=copy.deepcopy(tiny_backbone))
    learner.learn_task(make_dataset(["red", "green", "blue"], 8, seed=0), ["red", "green", "blue"])
    version = HeadVersion.build(learner, base)
    assert isinstance(version.head.scorer, DeviceScores)  # the head on the GPU, checked against the learner
    probe = [Sample(image=s.image, audio=s.audio, sample_rate=s.sample_rate)
             for s in make_dataset(["red", "green", "blue"], 2, seed=9)]
    for got, want in zip(version.predict(probe, top_k=3), learner.predict(probe, top_k=3)):
        assert got.classes[0] == want.classes[0] and got.path == want.path
