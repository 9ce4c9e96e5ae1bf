"""``export/int8.py`` and ``BaseGraphs.with_int8``: a base's image graph in int8, calibrated on kept pictures.

The tiny preset's base is built into a folder; held-out files are written as the daemon writes them
(``service/store.py``). The int8 graph is built from them (at most ``MAX_PICTURES``, classes in turn),
answers close to fp32, the same picture alike in any batch, and is refused by name when there are too
few pictures, when it is another base's, or damaged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from export.base import export_base
from export.int8 import MAX_EXAMPLES, MIN_EXAMPLES, CalibrationError, build_int8, count_pictures, main
from model.backbone import TriModalBackbone
from model.synthetic import make_dataset
from service.store import save_examples
from serving.base import IMAGE_GRAPH, INT8_META, BaseGraphs, int8_folder
from serving.errors import BaseGraphsError
from serving.inputs import prepare_images


@pytest.fixture(scope="module")
def tiny_base(tiny_backbone: TriModalBackbone, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bases") / "tiny"
    export_base(tiny_backbone, folder)
    return folder


def _held_out(folder: Path, per_class: int) -> Path:
    held = folder / "held_out"
    held.mkdir(parents=True, exist_ok=True)
    save_examples(held / "task-a.safetensors", make_dataset(["red", "green"], per_class, seed=1))
    save_examples(held / "task-b.safetensors", make_dataset(["blue", "white"], per_class, seed=2, first_index=2))
    return held


def test_the_int8_graph_answers_close_to_fp32_and_the_same_in_any_batch(tiny_base: Path, tmp_path: Path) -> None:
    held = _held_out(tmp_path, per_class=20)
    assert count_pictures(held) == 80
    out = int8_folder(tiny_base)
    info = build_int8(tiny_base, held, out)
    assert info["pictures"] == MAX_EXAMPLES and info["base"] == json.loads((tiny_base / "base.json").read_text())["digest"]
    assert {p.name for p in out.iterdir()} == {IMAGE_GRAPH, INT8_META}
    fp32 = BaseGraphs.load(tiny_base, threads=1)
    int8 = fp32.with_int8(out, threads=1)
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    meta = fp32.meta
    pictures = prepare_images([s.image for s in make_dataset(["red", "blue"], 6, seed=5)], fp32.image_size,
                              meta["image_mean"], meta["image_std"])
    a, b = fp32.image_features(pictures), int8.image_features(pictures)
    assert not np.array_equal(a, b)  # another graph, not a copy
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.9
    one_by_one = np.concatenate([int8.image_features(pictures[i:i + 1]) for i in range(len(pictures))])
    assert np.array_equal(one_by_one, b)  # static ranges: a picture's features do not depend on its batch


def test_too_few_pictures_another_base_or_a_damaged_graph_are_refused_by_name(tiny_base: Path, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:
    few = _held_out(tmp_path / "few", per_class=MIN_EXAMPLES // 4 - 1)
    with pytest.raises(CalibrationError, match=f"at least {MIN_EXAMPLES}"):
        build_int8(tiny_base, few, tmp_path / "never")
    assert not (tmp_path / "never").exists()
    assert main(["--base", str(tiny_base), "--held-out", str(few), "--out", str(tmp_path / "never")]) == 2
    assert "no int8 image graph" in capsys.readouterr().err

    good = tmp_path / "good"
    build_int8(tiny_base, _held_out(tmp_path / "enough", per_class=5), good)
    base = BaseGraphs.load(tiny_base, threads=1)
    other = tmp_path / "other"
    shutil.copytree(good, other)
    info = json.loads((other / INT8_META).read_text())
    (other / INT8_META).write_text(json.dumps({**info, "base": "0" * 64}))
    with pytest.raises(BaseGraphsError) as caught:
        base.with_int8(other, threads=1)
    assert caught.value.field == f"{INT8_META}.base"
    damaged = tmp_path / "damaged"
    shutil.copytree(good, damaged)
    (damaged / IMAGE_GRAPH).write_bytes((good / IMAGE_GRAPH).read_bytes()[:-64])
    with pytest.raises(BaseGraphsError, match="checksum") as caught:
        base.with_int8(damaged, threads=1)
    assert caught.value.field == str(damaged / IMAGE_GRAPH)
    with pytest.raises(BaseGraphsError, match="missing"):
        base.with_int8(tmp_path / "absent", threads=1)
