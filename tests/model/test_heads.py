"""The statistics heads: exact, order-free, mergeable, and unchanged by bad input."""

from __future__ import annotations

import pytest
import torch

from model.class_sums import distinct_examples, gcv_choice, gcv_ridge
from model.errors import CheckpointError, InvalidInputError
from model.heads import HeadConfig, SingularHeadError, StatisticsHead, unit_features

DIMS = {"av": 24, "visual": 16, "audio": 8}


def _task(classes: list[int], per_class: int = 30, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Features of ``classes`` (global ids) around class-specific centres, per path."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(10, DIMS["av"], generator=torch.Generator().manual_seed(123))
    labels = torch.tensor(classes).repeat_interleave(per_class)
    av = centres[labels] + 0.7 * torch.randn(len(labels), DIMS["av"], generator=g)
    return {"av": unit_features([av]), "visual": unit_features([av[:, :16]]),
            "audio": unit_features([av[:, 16:]])}, labels


def _learn(head: StatisticsHead, classes: list[int], rows: dict[int, int], seed: int = 0) -> None:
    """Teaches ``classes`` (global ids) as the head's next rows, recording id -> row in ``rows``."""
    x, labels = _task(classes, seed=seed)
    for c in classes:
        rows[c] = len(rows)
    y = torch.tensor([rows[int(c)] for c in labels])
    head.learn(x, {p: y for p in x}, len(rows))


def _columns(head: StatisticsHead, rows: dict[int, int], path: str = "av") -> torch.Tensor:
    """The head's weights with columns in global class order."""
    order = [rows[c] for c in sorted(rows)]
    return head.weights[path][:, order]


@pytest.mark.parametrize("kind,expansion", [("analytic", 0), ("analytic", 64), ("class-means", 0)])
def test_incremental_head_equals_the_head_fitted_once_on_everything(kind: str, expansion: int) -> None:
    config = HeadConfig(expansion=expansion)
    incremental, rows = StatisticsHead(kind, config, DIMS), {}
    for t, classes in enumerate([[0, 1], [2, 3], [4]]):
        _learn(incremental, classes, rows, seed=t)
    once = StatisticsHead(kind, config, DIMS)
    xs, ys = zip(*(_task(c, seed=t) for t, c in enumerate([[0, 1], [2, 3], [4]])))
    once.learn({p: torch.cat([x[p] for x in xs]) for p in DIMS}, {p: torch.cat(ys) for p in DIMS}, 5)
    for path in DIMS:
        assert incremental.ridge[path] == once.ridge[path]
        w, ref = incremental.weights[path], once.weights[path]
        assert torch.linalg.norm(w - ref) <= 1e-6 * torch.linalg.norm(ref)


@pytest.mark.parametrize("kind", ["analytic", "class-means"])
def test_a_task_of_known_classes_keeps_the_head_exact(kind: str) -> None:
    """Domain-incremental: more examples of learned classes (and one new class) add to their sums; the
    head equals the one fitted once on every example, and old classes keep their unknown thresholds."""
    config = HeadConfig(expansion=32)
    head, rows = StatisticsHead(kind, config, DIMS), {}
    _learn(head, [0, 1], rows, seed=0)
    thresholds = {p: t.clone() for p, t in head.thresholds.items()}
    x2, labels2 = _task([1, 0, 2], seed=1)  # classes 0 and 1 again, from another "speaker", and a new one
    rows[2] = 2
    head.learn(x2, {p: labels2 for p in x2}, 3)
    once = StatisticsHead(kind, config, DIMS)
    x1, labels1 = _task([0, 1], seed=0)
    once.learn({p: torch.cat([x1[p], x2[p]]) for p in DIMS}, {p: torch.cat([labels1, labels2]) for p in DIMS}, 3)
    for path in DIMS:
        ref = once.weights[path]
        assert torch.linalg.norm(head.weights[path] - ref) <= 1e-6 * torch.linalg.norm(ref)
        assert torch.equal(head.thresholds[path][:2], thresholds[path]) and len(head.thresholds[path]) == 3
    head.learn(*_task([0], seed=2)[:1], {p: torch.zeros(30, dtype=torch.long) for p in DIMS}, 3)  # no new class
    assert head.classes == 3


def test_the_order_of_tasks_does_not_change_the_head() -> None:
    config = HeadConfig(expansion=32)
    forward, rows_f = StatisticsHead("analytic", config, DIMS), {}
    backward, rows_b = StatisticsHead("analytic", config, DIMS), {}
    tasks = [([0, 1], 0), ([2, 3], 1), ([4, 5], 2)]
    for classes, seed in tasks:
        _learn(forward, classes, rows_f, seed)
    for classes, seed in reversed(tasks):
        _learn(backward, classes, rows_b, seed)
    for path in DIMS:
        w, ref = _columns(backward, rows_b, path), _columns(forward, rows_f, path)
        assert torch.linalg.norm(w - ref) <= 1e-6 * torch.linalg.norm(ref)


def test_two_sites_statistics_add_up_to_the_head_of_their_union() -> None:
    config = HeadConfig()
    site_a, rows_a = StatisticsHead("analytic", config, DIMS), {}
    site_b, rows_b = StatisticsHead("analytic", config, DIMS), {}
    _learn(site_a, [0, 1], rows_a, seed=0)
    _learn(site_b, [2, 3], rows_b, seed=1)
    _learn(site_b, [4], rows_b, seed=2)
    union, rows_u = StatisticsHead("analytic", config, DIMS), {}
    for classes, seed in (([0, 1], 0), ([2, 3], 1), ([4], 2)):
        _learn(union, classes, rows_u, seed)
    merged = site_a.merge(site_b)
    assert merged.classes == 5
    for path in DIMS:
        ref = union.weights[path]
        assert torch.linalg.norm(merged.weights[path] - ref) <= 1e-6 * torch.linalg.norm(ref)
    with pytest.raises(InvalidInputError, match="head"):
        site_a.merge(StatisticsHead("class-means", config, DIMS))


def test_gcv_matches_a_brute_force_evaluation() -> None:
    """The statistics-only GCV formula agrees with one computed from the examples themselves."""
    x, labels = _task([0, 1, 2], per_class=20)
    h = x["av"].double()
    y = torch.nn.functional.one_hot(labels).double()
    gram, targets, n = h.T @ h, h.T @ y, len(h)

    def brute(lam: float) -> float:
        hat = h @ torch.linalg.solve(gram + lam * torch.eye(len(gram), dtype=torch.float64), h.T)
        rss = float(((y - hat @ y) ** 2).sum())
        return n * rss / (n - float(hat.trace())) ** 2

    grid = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    assert gcv_ridge(gram, targets, n, grid) == min(grid, key=brute)


def test_scores_rank_the_true_class_first_and_flag_a_class_never_taught() -> None:
    head, rows = StatisticsHead("analytic", HeadConfig(), DIMS), {}
    _learn(head, [0, 1, 2], rows)
    x, labels = _task([0, 1, 2], seed=9)
    scores = head.scores(x["av"], "av")
    expected = torch.tensor([rows[int(c)] for c in labels])
    assert float((scores.argmax(1) == expected).float().mean()) > 0.95
    assert float(head.unknown(scores, "av").float().mean()) < 0.1
    stranger, _ = _task([7], seed=9)
    assert float(head.unknown(head.scores(stranger["av"], "av"), "av").float().mean()) > 0.9


def _snapshot(head: StatisticsHead) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in head.state_dict().items()}


def test_bad_input_is_refused_by_name_and_changes_nothing() -> None:
    head, rows = StatisticsHead("analytic", HeadConfig(min_examples_per_class=2), DIMS), {}
    _learn(head, [0, 1], rows)
    before, weights = _snapshot(head), {p: w.clone() for p, w in head.weights.items()}
    x, _ = _task([2, 3])
    one = {p: v[:31] for p, v in x.items()}  # 30 of class 2, 1 of class 3
    y = torch.tensor([2] * 30 + [3])
    with pytest.raises(InvalidInputError, match="examples") as info:
        head.learn(one, {p: y for p in one}, 4)
    assert "fewer than 2" in str(info.value)
    bad = {p: v.clone() for p, v in x.items()}
    bad["visual"][5, 3] = float("nan")
    y = torch.tensor([2] * 30 + [3] * 30)
    with pytest.raises(InvalidInputError, match=r"features\[visual\]"):
        head.learn(bad, {p: y for p in bad}, 4)
    with pytest.raises(InvalidInputError, match=r"labels\[av\]"):
        head.learn(x, {p: y + 2 for p in x}, 4)  # rows beyond the classes named
    with pytest.raises(InvalidInputError, match=r"features\[audio\]"):
        head.learn({**x, "audio": x["audio"][:, :4]}, {p: y for p in x}, 4)
    after = _snapshot(head)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(weights[p], head.weights[p]) for p in weights)


def test_a_singular_system_is_a_clear_error_and_changes_nothing() -> None:
    head = StatisticsHead("analytic", HeadConfig(ridge=1e-300), {"av": 64})
    x = torch.ones(10, 64) * torch.arange(1, 11).unsqueeze(1) / 80.0  # G has rank 1, lambda too small to help
    with pytest.raises(SingularHeadError, match="head.av"):
        head.learn({"av": x}, {"av": torch.tensor([0] * 5 + [1] * 5)}, 2)
    assert head.classes == 0 and head.weights == {}


def test_state_round_trips_and_a_changed_expansion_is_refused() -> None:
    head, rows = StatisticsHead("analytic", HeadConfig(expansion=48), DIMS), {}
    _learn(head, [0, 1, 2], rows)
    state, meta = head.state_dict(), head.metadata()
    loaded = StatisticsHead("analytic", HeadConfig(expansion=48), DIMS)
    loaded.load_state_dict(state, meta, "head.safetensors")
    x, _ = _task([0, 1, 2], seed=4)
    for path in DIMS:
        assert torch.equal(loaded.scores(x[path], path), head.scores(x[path], path))
        assert torch.equal(loaded.thresholds[path], head.thresholds[path])
    other = StatisticsHead("analytic", HeadConfig(expansion=48, seed=1), DIMS)
    with pytest.raises(CheckpointError, match="expansion_digest"):
        other.load_state_dict(state, meta, "head.safetensors")
    broken = {k: v for k, v in state.items() if k != "visual.targets"}
    with pytest.raises(CheckpointError, match="head.visual"):
        StatisticsHead("analytic", HeadConfig(expansion=48), DIMS).load_state_dict(broken, meta, "h")


@pytest.mark.parametrize("field,value", [("kind", "svm"), ("features", "raw"), ("expansion", -1), ("ridge", 0.0),
                                         ("min_examples_per_class", 0), ("unknown_quantile", 0.7)])
def test_config_names_the_bad_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"head.{field}"):
        HeadConfig(**{field: value})  # type: ignore[arg-type]


def test_gcv_stays_accurate_when_the_expansion_is_wider_than_the_examples_are_many() -> None:
    """With M > n the fit can interpolate; GCV's error must still match a brute-force evaluation (the
    plain formula cancels to noise there and chose the smallest ridge, which memorises the examples)."""
    x, labels = _task([0, 1, 2], per_class=10)
    head = StatisticsHead("analytic", HeadConfig(expansion=200), {"av": DIMS["av"]})
    h = head.expand(x["av"], "av")  # (30, 200)
    y = torch.nn.functional.one_hot(labels).double()
    gram, targets, n = h.T @ h, h.T @ y, len(h)

    def brute(lam: float) -> float:
        inner = h @ h.T  # the hat matrix through the n x n kernel, accurate for any lambda
        hat = inner @ torch.linalg.inv(inner + lam * torch.eye(n, dtype=torch.float64))
        rss = float(((y - hat @ y) ** 2).sum())
        return n * rss / (n - float(hat.trace())) ** 2

    grid = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
    chosen, error = gcv_choice(gram, targets, n, grid)
    assert chosen == min(grid, key=brute) and chosen > 1e-4
    assert error == pytest.approx(brute(chosen), rel=1e-6)


def test_bit_identical_examples_count_once_on_their_path() -> None:
    """ESC-50 pairs a clip with several photos: the audio path must see the clip once."""
    x, labels = _task([0, 1], per_class=15)
    once = StatisticsHead("analytic", HeadConfig(expansion=32), DIMS)
    once.learn(x, {p: labels for p in DIMS}, 2)
    thrice = StatisticsHead("analytic", HeadConfig(expansion=32), DIMS)
    repeated = {p: v.repeat(3, 1) for p, v in x.items()}
    thrice.learn(repeated, {p: labels.repeat(3) for p in DIMS}, 2)
    for path in DIMS:
        assert torch.equal(thrice.stats[path].gram, once.stats[path].gram)
        assert torch.equal(thrice.stats[path].counts, once.stats[path].counts)
    assert torch.equal(distinct_examples(repeated["av"], labels.repeat(3)), torch.arange(len(labels)))
    with pytest.raises(InvalidInputError, match="distinct examples"):
        StatisticsHead("analytic", HeadConfig(), DIMS).learn(
            {"av": x["av"][:1].repeat(4, 1)}, {"av": torch.tensor([0, 0, 1, 1])}, 2)


def _pairs(n_per_class: int, seed: int, noisy: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Pairs of 4 classes whose ``noisy`` modality is pure noise and the other one carries the class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(n_per_class)
    centres = torch.randn(4, 16, generator=torch.Generator().manual_seed(7))
    signal = centres[labels] + 0.9 * torch.randn(len(labels), 16, generator=g)
    noise = torch.randn(len(labels), 8, generator=g)
    visual, audio = (noise, signal) if noisy == "visual" else (signal, noise)
    return {"visual": unit_features([visual]), "audio": unit_features([audio]),
            "av": unit_features([visual, audio])}, labels


@pytest.mark.parametrize("noisy", ["audio", "visual"])
def test_the_fused_answer_never_loses_to_the_better_path_when_one_modality_is_noise(noisy: str) -> None:
    dims = {"visual": 16 if noisy == "audio" else 8, "audio": 8 if noisy == "audio" else 16, "av": 24}
    head = StatisticsHead("analytic", HeadConfig(expansion=256), dims)
    x, labels = _pairs(60, seed=0, noisy=noisy)
    head.learn(x, {p: labels for p in dims}, 4)
    weights = head.fusion_weights()
    assert noisy not in weights and abs(sum(weights.values()) - 1.0) < 1e-9  # noise explains nothing: no vote
    test, truth = _pairs(200, seed=1, noisy=noisy)

    def accuracy(scores: torch.Tensor) -> float:
        return float((scores.argmax(dim=1) == truth).double().mean())

    best_single = max(accuracy(head.scores(test[p], p)) for p in ("visual", "audio"))
    # The joint path still reads the noise beside the signal, so the answer may differ from the
    # clean path's by a sample or two of these 800 either way; a vote for the noise would cost more.
    assert accuracy(head.pair_scores(test)) >= best_single - 0.005
    assert accuracy(head.scores(test[noisy], noisy)) < 0.4  # the noise really is noise (chance: 0.25)


def test_merged_heads_weigh_their_paths_as_the_central_head_does() -> None:
    config = HeadConfig(expansion=48)
    site_a, site_b, union = (StatisticsHead("analytic", config, DIMS) for _ in range(3))
    (xa, ya), (xb, yb) = _task([0, 1], seed=0), _task([2, 3], seed=1)
    site_a.learn(xa, {p: ya for p in DIMS}, 2)
    site_b.learn(xb, {p: yb - 2 for p in DIMS}, 2)
    union.learn({p: torch.cat([xa[p], xb[p]]) for p in DIMS}, {p: torch.cat([ya, yb]) for p in DIMS}, 4)
    merged = site_a.merge(site_b)
    for path, weight in union.fusion_weights().items():
        assert merged.fusion_weights()[path] == pytest.approx(weight, rel=1e-9)


def test_a_saved_head_is_solved_again_with_the_ridge_it_recorded() -> None:
    """A version answers as it did when committed, even if the ridge choice changes later."""
    head, rows = StatisticsHead("analytic", HeadConfig(expansion=48), DIMS), {}
    _learn(head, [0, 1, 2], rows)
    meta = head.metadata()
    meta["ridge"] = {p: 123.0 for p in head.ridge}  # as if an earlier rule had chosen another value
    loaded = StatisticsHead("analytic", HeadConfig(expansion=48), DIMS)
    loaded.load_state_dict(head.state_dict(), meta, "head.safetensors")
    assert loaded.ridge == {p: 123.0 for p in head.ridge}


def test_pairs_of_a_version_from_before_the_fused_answer_keep_the_joint_path() -> None:
    from model.learner_config import LearnerConfig

    config = LearnerConfig.from_dict({"head": {"kind": "analytic"}})
    assert config.head.fuse == "av"
    head = StatisticsHead("analytic", HeadConfig(expansion=48, fuse="av"), DIMS)
    _learn(head, [0, 1, 2], {})
    assert head.fusion_weights() == {"av": 1.0}
