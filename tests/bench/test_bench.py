"""The benchmark command on the real AV-MNIST folder (skipped when the data is absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from bench.run import class_order, main
from bench.suite import setting_differences, tables


def test_class_order_is_a_seeded_split() -> None:
    names = [str(i) for i in range(10)]
    tasks = class_order(names, 3, seed=0)
    assert [len(t) for t in tasks] == [4, 3, 3]
    assert sorted(c for t in tasks for c in t) == sorted(names)
    assert tasks == class_order(names, 3, seed=0) != class_order(names, 3, seed=1)
    with pytest.raises(ValueError, match="tasks"):
        class_order(names, 11, seed=0)


@pytest.mark.slow
def test_quick_benchmark_writes_the_full_report(avmnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert main(["--data", str(avmnist), "--preset", "tiny", "--strategy", "mcil-paper", "--tasks", "5",
                 "--quick", "--no-progress", "--fusion-threshold", "1.0", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["class_order"]) == 5 and report["held_out_per_task"] == [20] * 5
    for path in ("av", "visual", "audio"):
        figures = report["figures"][path]
        for name in ("average_accuracy", "last_accuracy", "forgetting", "bwt", "fwt", "m1", "m2"):
            assert figures[name] is not None, (path, name)
        assert len(report["record"]["paths"][path]["accuracy_matrix"]) == 5
    assert len(report["per_task"]) == 5
    assert all(t["train_seconds"] > 0 and t["peak_rss_mib"] > 0 for t in report["per_task"])
    assert report["parameters"]["per_task"].keys() == {f"task{i}" for i in range(1, 6)}
    assert report["learner_config"]["fusion"]["threshold"] == 1.0
    assert [t["fused_share"] for t in report["per_task"]] == [0.0] * 5  # r = 1 never happens
    assert report["backbone_config"]["router"]["task_distance"] == "gaussian"
    assert report["machine"]["threads"] >= 1 and report["machine"]["cpus"] >= 1
    on_gpu = torch.cuda.is_available()  # --device defaults to auto
    assert report["machine"]["device"].startswith("cuda:0 (" if on_gpu else "cpu")
    assert (report["peak_gpu_mib"] is not None) == on_gpu


@pytest.mark.slow
def test_suite_runs_at_most_max_runs_then_aggregates(avmnist: Path, tmp_path: Path) -> None:
    args = ["--suite", "avmnist", "--data", str(avmnist), "--preset", "tiny", "--quick", "--threads", "1",
            "--out", str(tmp_path)]
    assert main([*args, "--max-runs", "1"]) == 0
    assert [p.name for p in tmp_path.glob("tiny-*.json")] == ["tiny-zero-shot-T5-s0.json"]
    table = (tmp_path / "tables.md").read_text()
    assert "| zero-shot | 1 |" in table
    assert "| zero-shot | 1 | 1 |" in table.split("### Cost")[1]  # one thread, one run
    assert (tmp_path / "forgetting_curve.png").stat().st_size > 0
    assert main([*args, "--max-runs", "0"]) == 0  # aggregate only: nothing new runs
    assert len(list(tmp_path.glob("tiny-*.json"))) == 1


@pytest.mark.slow
def test_suite_runs_two_at_a_time_with_a_share_of_the_cpus_each(avmnist: Path, tmp_path: Path) -> None:
    args = ["--suite", "avmnist", "--data", str(avmnist), "--preset", "tiny", "--quick", "--out", str(tmp_path)]
    assert main([*args, "--workers", "2", "--max-runs", "2"]) == 0
    names = sorted(p.name for p in tmp_path.glob("tiny-*.json"))
    assert names == ["tiny-simplecil-T5-s0.json", "tiny-zero-shot-T5-s0.json"]
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert all(json.loads((tmp_path / n).read_text())["machine"]["threads"] == threads for n in names)
    assert "| simplecil | 1 |" in (tmp_path / "tables.md").read_text()


def test_the_suite_draws_a_forgetting_curve_for_each_number_of_tasks_it_has_runs_of(tmp_path: Path) -> None:
    reports = Path(__file__).parents[2] / "docs" / "reports" / "avmnist"
    out = tmp_path / "out"
    out.mkdir()
    for name in ("lite-mcil-paper-T5-s0.json", "lite-mcil-paper-T10-s0.json", "lite-icarl-T10-s0.json"):
        (out / name).write_text((reports / name).read_text())
    data = tmp_path / "data"  # the command's checks want a train.csv; aggregating reads none
    data.mkdir()
    (data / "train.csv").write_text("")
    assert main(["--suite", "avmnist", "--data", str(data), "--preset", "lite", "--out", str(out),
                 "--max-runs", "0"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["forgetting_curve.png", "forgetting_curve_T10.png"]
    assert "| icarl | 1 |" in (out / "tables.md").read_text().split("### T = 10, path `av`")[1]


@pytest.mark.slow
def test_a_failed_run_leaves_no_file_and_fails_the_suite(avmnist: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # A folder with train.csv passes the command's checks; the run's own process finds no images.
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "test"):
        (data / f"{split}.csv").write_text((avmnist / f"{split}.csv").read_text().splitlines()[0] + "\n")
    out = tmp_path / "out"
    args = ["--suite", "avmnist", "--data", str(data), "--preset", "tiny", "--threads", "1",
            "--out", str(out), "--max-runs", "1"]
    assert main(args) == 1
    assert not list(out.glob("tiny-*.json*"))
    assert not (out / "forgetting_curve.png").exists()  # nothing to plot yet
    err = capsys.readouterr().err
    assert "run tiny-zero-shot-T5-s0.json failed (FileNotFoundError:" in err and "run the suite again" in err


def test_max_runs_only_with_the_suite(avmnist: Path) -> None:
    assert main(["--data", str(avmnist), "--max-runs", "1", "--out", "unused.json"]) == 2


@pytest.mark.parametrize("device", ["gpu", "cuda:x"] + ([] if torch.cuda.is_available() else ["cuda"]))
def test_a_device_that_is_not_a_device_here_is_refused(avmnist: Path, device: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(avmnist), "--device", device, "--out", "unused.json"]) == 2
    assert "--device" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value"), [("--epochs", "0"), ("--min-steps", "-1"), ("--batch-size", "0"),
                                               ("--lr", "0"), ("--threads", "0")])
def test_a_training_option_out_of_range_is_refused_naming_it(avmnist: Path, option: str, value: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(avmnist), option, value, "--out", "unused.json"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {option}: must be")


def test_the_number_of_tasks_must_fit_the_classes(avmnist: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    for tasks in ("0", "11"):
        assert main(["--data", str(avmnist), "--tasks", tasks, "--out", str(out)]) == 2
        assert capsys.readouterr().err.startswith(f"error: --tasks: must be between 1 and 10 (the classes in "
                                                  f"{avmnist / 'train.csv'}), got {tasks}")
    assert not out.exists()


def test_a_single_run_needs_out(avmnist: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(avmnist)]) == 2
    assert capsys.readouterr().err.startswith("error: --out: required")


def test_out_is_a_file_for_one_run_and_a_folder_for_the_suite(avmnist: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(avmnist), "--out", str(tmp_path)]) == 2  # before minutes of work, not after
    assert capsys.readouterr().err.startswith(f"error: --out: {tmp_path} is a folder")
    report = tmp_path / "r.json"
    report.write_text("{}")
    assert main(["--data", str(avmnist), "--suite", "avmnist", "--out", str(report)]) == 2
    assert capsys.readouterr().err.startswith(f"error: --out: {report} is a file")
    assert report.read_text() == "{}"


@pytest.mark.parametrize("workers", ["0", "2"])
def test_workers_at_least_one_and_several_only_with_the_suite(avmnist: Path, workers: str) -> None:
    assert main(["--data", str(avmnist), "--workers", workers, "--out", "unused.json"]) == 2


def _result(seed: int, threads: int, train_seconds: float) -> dict:
    figures = {"average_accuracy": 50.0, "last_accuracy": 40.0, "forgetting": 10.0, "bwt": -10.0, "fwt": 0.0,
               "m1": 1.0, "m2": 0.1}
    return {"strategy": "mcil", "tasks": 5, "seed": seed, "ablation": "none", "figures": {"av": figures},
            "class_order": [["a"]], "per_task": [{"train_seconds": train_seconds, "train_examples": 450}],
            "peak_rss_mib": 100.0,
            "parameters": {"learned_total": 7}, "machine": {"cpus": 2, "threads": threads}}


def test_cost_table_keeps_runs_with_other_thread_counts_apart() -> None:
    cost = tables([_result(0, 2, 90.0), _result(1, 1, 140.0), _result(2, 1, 150.0)]).split("### Cost")[1]
    assert "| mcil | 1 | 2 | 145.00 ± 7.07 | 100.00 ± 0.00 | 7 |" in cost
    assert "| mcil | 2 | 1 | 90.00 | 100.00 | 7 |" in cost


def test_cost_table_reads_files_that_named_threads_cpus() -> None:
    old = _result(0, 2, 90.0)
    old["machine"] = {"cpus": 2}
    assert "| mcil | 2 | 1 | 90.00 |" in tables([old])


def _settings_result(seed: int, threshold: float, ablation: str = "none", **backbone: object) -> dict:
    r = _result(seed, 1, 1.0)
    r.update(ablation=ablation, preset="lite", quick=False, evaluated_on="test.csv",
             learner_config={"training": {"seed": seed, "epochs": 5},
                             "fusion": {"kind": "concat" if ablation == "no-aavfm" else "aavfm",
                                        "threshold": threshold}})
    if backbone:
        r["backbone_config"] = {"router": backbone}
    return r


def test_setting_differences_ignore_seed_and_ablation_but_name_other_changes() -> None:
    same = [_settings_result(0, -1.0), _settings_result(1, -1.0), _settings_result(0, -1.0, "no-aavfm")]
    assert setting_differences(same) == []
    mixed = [*same, _settings_result(2, 0.8)]
    (line,) = setting_differences(mixed)
    # the no-aavfm run concatenates, so AAVFM's threshold does not reach it
    assert line == "`fusion.threshold`: -1.0 in lite-mcil-T5-s0, lite-mcil-T5-s1; 0.8 in lite-mcil-T5-s2"
    assert "not all made with the same settings" in tables(mixed, setting_differences(mixed))
    older = _settings_result(3, -1.0)
    del older["learner_config"]["fusion"]["threshold"]  # made before the field existed
    assert setting_differences([*same, older]) == [(
        "`fusion.threshold`: (not recorded) in lite-mcil-T5-s3; -1.0 in lite-mcil-T5-s0, lite-mcil-T5-s1")]


def test_setting_differences_skip_aavfm_settings_of_strategies_that_concatenate() -> None:
    runs = []
    for seed, unit_inputs in enumerate((True, False)):
        r = _settings_result(seed, -1.0)
        r["learner_config"]["fusion"]["unit_inputs"] = unit_inputs
        runs.append(r)
    assert setting_differences(runs) != []  # mcil runs AAVFM: the difference matters
    for r in runs:
        r["strategy"] = "finetune"  # reports of concatenating strategies once named kind "aavfm"
    assert setting_differences(runs) == []


def test_setting_differences_read_replay_weighting_as_of_the_report_and_only_where_replay_runs() -> None:
    older, newer = _settings_result(0, -1.0), _settings_result(1, -1.0)
    newer["learner_config"]["replay_weighting"] = "per-class"  # older predates the field: it ran "equal"
    assert setting_differences([older, newer]) == [
        '`replay_weighting`: "equal" in lite-mcil-T5-s0; "per-class" in lite-mcil-T5-s1']
    older["learner_config"]["replay_weighting"] = "equal"
    assert len(setting_differences([older, newer])) == 1  # recorded or not, the same behaviour
    for r in (older, newer):
        r["strategy"] = "icarl"  # keeps exemplars, replays no features: the setting does not reach it
    assert setting_differences([older, newer]) == []


def test_setting_differences_name_min_steps_only_where_it_added_epochs() -> None:
    older, newer = _settings_result(0, -1.0), _settings_result(1, -1.0)
    newer["learner_config"]["training"]["min_steps"] = 70  # older predates the field: it ran min_steps 0
    assert setting_differences([older, newer]) == []  # 450 pairs get 75 steps in 5 epochs: 70 never binds
    for r in (older, newer):
        r["per_task"] = [{"train_seconds": 1.0, "train_examples": 225}]  # 40 steps in 5 epochs
    assert setting_differences([older, newer]) == [
        '`training.min_steps`: "never reached" in lite-mcil-T5-s0; 70 in lite-mcil-T5-s1']


def test_setting_differences_compare_backbone_settings_where_recorded() -> None:
    a = _settings_result(0, -1.0, task_distance="gaussian")
    b = _settings_result(1, -1.0, task_distance="euclidean")
    old = _settings_result(2, -1.0)
    lines = setting_differences([a, b, old])
    assert lines[0].startswith("`backbone.router.task_distance`: \"euclidean\" in lite-mcil-T5-s1")
    assert lines[1] == "backbone settings not recorded in lite-mcil-T5-s2"


@pytest.mark.slow
def test_the_domain_incremental_mode_teaches_every_class_one_speaker_at_a_time(avmnist: Path,
                                                                              tmp_path: Path) -> None:
    out = tmp_path / "dil.json"
    assert main(["--data", str(avmnist), "--preset", "tiny", "--strategy", "simplecil", "--scenario", "domain",
                 "--quick", "--no-progress", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    speakers = [name for (name,) in report["class_order"]]
    assert report["scenario"] == "domain" and report["tasks"] == len(speakers) == 5
    assert sorted(speakers) == [f"speaker {s}" for s in ("george", "jackson", "lucas", "theo", "yweweler")]
    assert [t["classes"] for t in report["per_task"]] == report["class_order"]
    assert all(t["train_examples"] > 0 and t["held_out"] > 0 for t in report["per_task"])
    assert len(report["record"]["paths"]["av"]["accuracy_matrix"]) == 5
    assert report["figures"]["av"]["last_accuracy"] is not None


def test_the_domain_incremental_suite_names_its_runs_and_tables_them_apart() -> None:
    from bench.suite import plan, run_name

    runs = plan("lite", scenario="domain")
    assert {r["strategy"] for r in runs} >= {"mcil", "cign", "mmcl"} and len(runs) == 3 * len({r["strategy"] for r in runs})
    assert run_name(runs[0]) == "lite-zero-shot-DIL-s0.json"
    domain = dict(_result(0, 1, 5.0), scenario="domain", class_order=[["speaker theo"], ["speaker lucas"]])
    table = tables([_result(0, 1, 5.0), domain])
    assert "### Domain-incremental" in table and "- seed 0: ['speaker theo', 'speaker lucas']" in table
    class_rows = table.split("### T = 5, path `av`")[1].split("###")[0]
    assert "| mcil | 1 |" in class_rows  # one run: the domain run is tabled apart


def test_validation_holds_out_the_last_speaker_whole() -> None:
    """ESC-CIFAR repeats each clip across rows: validation must not share a recording with training."""
    from bench.run import held_out_domain
    from model.samples import LabeledSample

    samples = [LabeledSample(image=None, audio=None, sample_rate=16000, label=str(i % 2)) for i in range(12)]
    domains = ["fold1", "fold2", "fold3"] * 4
    train, held, what = held_out_domain(samples, domains, seed=0)
    assert what == "validation (train.csv, speaker fold3)"
    position = {id(s): i for i, s in enumerate(samples)}
    assert [position[id(s)] for s in held] == [2, 5, 8, 11] and len(train) == 8
    assert not {id(s) for s in train} & {id(s) for s in held}
    train, held, what = held_out_domain(samples, [""] * 12, seed=0)  # no speaker column: 10% per class
    assert what == "validation (10% of train.csv)" and len(held) == 2


def test_the_esc_cifar_suite_runs_its_rows_at_four_tasks() -> None:
    from bench.suite import ESC_STRATEGIES, plan

    runs = plan("lite", suite="esc-cifar")
    assert {r["tasks"] for r in runs} == {4} and {r["seed"] for r in runs} == {0, 1, 2}
    assert {r["strategy"] for r in runs} == set(ESC_STRATEGIES)
    fast = plan("lite", rows="fast", suite="esc-cifar")
    assert {r["strategy"] for r in fast} == {"zero-shot", "simplecil", "ranpac", "mcil"}
