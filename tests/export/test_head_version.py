"""``export/base.py`` and ``export/head_version.py``: a base compiled once, versions served as heads over it.

The tiny preset's base is built into a folder, loaded, and refused by name when it is another base's
or damaged; a learner's versions answer through it as the learner answers.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from export.base import base_digest, export_base
from export.errors import CompileError
from export.head_version import HeadVersion
from model.backbone import TriModalBackbone
from model.learner import create_learner
from model.samples import Sample
from model.synthetic import make_dataset
from serving.base import IMAGE_GRAPH, META_FILE, BaseGraphs, BaseGraphsError


@pytest.fixture(scope="module")
def tiny_base(tiny_backbone: TriModalBackbone, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-base")
    meta = export_base(tiny_backbone, folder)
    assert meta["digest"] == base_digest(tiny_backbone) and float(str(meta["largest_difference"])) <= 1e-4
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
    other = copy.deepcopy(tiny_backbone)
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
