"""A whole benchmark table in one command, resumable: AV-MNIST's or the real sounds and photos'.

    python -m bench --suite avmnist --data ../shared/data/avmnist --preset lite --out results/avmnist
    python -m bench --suite esc-cifar --data ../shared/data/esc-cifar --preset lite --out results/esc-cifar

``avmnist``: T = 5, 3 and 10, every strategy, the ``mcil`` ablations. ``esc-cifar`` (8 classes): T = 4,
the rows of ``ESC_STRATEGIES``.

Runs every (strategy, T, seed) of the table and the ``mcil`` ablations, each into its own JSON file
in ``--out``; a run whose file exists is skipped, so an interrupted suite picks up where it stopped.
Then it aggregates whatever runs exist into ``--out/tables.md`` (mean and standard deviation over
seeds) and the forgetting curves (accuracy on all seen classes after each task):
``--out/forgetting_curve.png`` for T = 5, ``forgetting_curve_T3.png`` and ``forgetting_curve_T10.png``.
``--max-runs N`` stops after N new runs (``--max-runs 0``: only aggregate what exists).

Each run has a process of its own (so its peak-memory figure is its own, not the largest of the
runs before it). ``--workers N`` runs N at once, each with ``cpus // N`` PyTorch threads unless
``--threads`` says otherwise: on a 2-core machine, two one-thread runs train about 16% more per hour
than one two-thread run (ab927db:docs/benchmarks.md). A run that fails is reported at the end and leaves no
file, so the next invocation retries it; the others still run.

Runs in one folder should share their settings: where they do not (say, files from before a default
changed), the suite warns and ``tables.md`` opens with the settings that differ and the runs using each.

Imports point one way: ``bench.run`` (the command line) imports this module for ``--suite`` and hands
:func:`run_suite` its single-run function; nothing here imports ``bench.run``.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tqdm import tqdm

from model.fusion import AAVFM_ONLY_FIELDS
from model.learner_config import SETTINGS_BEFORE_THEY_WERE_SAVED
from model.strategies import STRATEGIES
from model.training import TrainingConfig

STRATEGY_ORDER = ("zero-shot", "simplecil", "ranpac", "finetune", "lwf", "icarl", "moe-adapters", "mcil-paper",
                  "mcil", "cign", "mmcl", "joint")
FAST_STRATEGIES = ("zero-shot", "simplecil", "ranpac", "mcil")
"""The rows that train by gradient at most once (``--rows fast``): minutes each, not hours."""
PAPER_STRATEGIES = ("cign", "mmcl")
"""The other two papers' systems (``--rows papers``): they train every task, over frozen tokens."""
DOMAIN_STRATEGIES = ("zero-shot", "simplecil", "ranpac", "mcil", "cign", "mmcl")
"""The rows of the domain-incremental table (``--scenario domain``)."""
ESC_STRATEGIES = ("zero-shot", "simplecil", "ranpac", "mcil-paper", "mcil", "joint")
"""The rows of the ESC-CIFAR table (``--suite esc-cifar``)."""
TASK_COUNTS = (5, 3, 10)
SUITE_TASK_COUNTS = {"avmnist": TASK_COUNTS, "esc-cifar": (4,)}
SEEDS = (0, 1, 2)
ABLATIONS = ("no-text-diversity", "no-aavfm", "no-loss", "frozen-features", "both-features")
FIGURES = ("average_accuracy", "last_accuracy", "forgetting", "bwt", "fwt", "m1", "m2")

RunOne = Callable[[argparse.Namespace], dict[str, Any]]
"""One benchmark run (``bench.run.run``): its options in, its JSON report out. It must be a module-level
function, since each run is sent to a worker process of its own."""


def plan(preset: str, rows: str = "all", scenario: str = "class", suite: str = "avmnist") -> list[dict[str, Any]]:
    """Every run of the table, main rows first (T = 5 before T = 3 and T = 10), then ablations;
    ``suite="esc-cifar"``: ``ESC_STRATEGIES`` at T = 4 (``rows="fast"``: those of ``FAST_STRATEGIES``);
    ``rows="fast"``: only the strategies of ``FAST_STRATEGIES`` and the ablations; ``rows="papers"``:
    ``PAPER_STRATEGIES`` at T = 5 and 10. ``scenario="domain"``: the domain-incremental runs of
    ``DOMAIN_STRATEGIES`` (one task per speaker)."""
    if scenario == "domain":
        runs = [dict(strategy=s, tasks=0, seed=seed, ablation="none", scenario="domain")
                for seed in SEEDS for s in DOMAIN_STRATEGIES]
        return [dict(r, preset=preset) for r in runs]
    if rows == "papers":
        runs = [dict(strategy=s, tasks=t, seed=seed, ablation="none") for t in (5, 10) for seed in SEEDS
                for s in PAPER_STRATEGIES]
        return [dict(r, preset=preset, scenario="class") for r in runs]
    if suite == "esc-cifar":
        chosen = [s for s in ESC_STRATEGIES if rows != "fast" or s in FAST_STRATEGIES]
        runs = [dict(strategy=s, tasks=4, seed=seed, ablation="none") for seed in SEEDS for s in chosen]
        return [dict(r, preset=preset, scenario="class") for r in runs]
    strategies = FAST_STRATEGIES if rows == "fast" else STRATEGY_ORDER
    runs = [dict(strategy=s, tasks=t, seed=seed, ablation="none")
            for t in TASK_COUNTS for seed in SEEDS for s in strategies]
    runs += [dict(strategy="mcil", tasks=5, seed=seed, ablation=a) for a in ABLATIONS for seed in SEEDS]
    return [dict(r, preset=preset, scenario="class") for r in runs]


def run_name(r: dict[str, Any]) -> str:
    suffix = "" if r["ablation"] == "none" else f"-{r['ablation']}"
    if r.get("scenario") == "domain":
        return f"{r['preset']}-{r['strategy']}-DIL-s{r['seed']}.json"
    return f"{r['preset']}-{r['strategy']}{suffix}-T{r['tasks']}-s{r['seed']}.json"


def run_suite(args: argparse.Namespace, run: RunOne) -> int:
    """Every pending run of the table (each by ``run``, in a process of its own), then tables and curves."""
    out = Path(args.out or "results/avmnist")
    out.mkdir(parents=True, exist_ok=True)
    runs = plan(args.preset, getattr(args, "rows", "all"), getattr(args, "scenario", "class"), args.suite)
    todo = [r for r in runs if not (out / run_name(r)).exists()]
    print(f"{len(runs) - len(todo)} of {len(runs)} runs already done in {out}", file=sys.stderr)
    if args.max_runs is not None:
        todo = todo[:args.max_runs]
    failed = _run_all(args, todo, out, run) if todo else []
    results = [json.loads(p.read_text()) for p in sorted(out.glob(f"{args.preset}-*.json"))]
    differences = setting_differences(results)
    for line in differences:
        print(f"warning: runs in {out} differ in a setting: {line}", file=sys.stderr)
    (out / "tables.md").write_text(tables(results, differences))
    print(f"wrote {out / 'tables.md'}", file=sys.stderr)
    for tasks in SUITE_TASK_COUNTS[args.suite]:
        curve = out / curve_name(tasks)
        if plot_forgetting_curve(results, curve, tasks, args.suite):
            print(f"wrote {curve}", file=sys.stderr)
        else:
            print(f"no T = {tasks} run yet: no {curve.name}", file=sys.stderr)
    for name, error in failed:
        print(f"error: run {name} failed ({error}); run the suite again to retry it", file=sys.stderr)
    return 1 if failed else 0


def _run_all(args: argparse.Namespace, todo: list[dict[str, Any]], out: Path,
             run: RunOne) -> list[tuple[str, str]]:
    """Run ``todo`` ``args.workers`` at a time, a fresh process per run; returns the failed runs."""
    workers = args.workers
    threads = args.threads or (max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None)
    failed: list[tuple[str, str]] = []
    context = multiprocessing.get_context("spawn")  # never fork a process that holds PyTorch threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, max_tasks_per_child=1) as pool:
        futures = {pool.submit(run, _run_arguments(args, r, threads)): r for r in todo}
        try:
            for future in tqdm(as_completed(futures), total=len(futures), desc="benchmark", unit="run"):
                name = run_name(futures[future])
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - one failed run must not cost the others
                    failed.append((name, f"{type(exc).__name__}: {exc}"))
                    continue
                tmp = out / (name + ".tmp")
                tmp.write_text(json.dumps(result, indent=2))
                tmp.replace(out / name)  # a run counts as done only once its file is whole
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return failed


def _run_arguments(args: argparse.Namespace, r: dict[str, Any], threads: int | None) -> argparse.Namespace:
    run_args = copy.copy(args)
    run_args.strategy, run_args.tasks, run_args.seed, run_args.ablation = (
        r["strategy"], r["tasks"], r["seed"], r["ablation"])
    run_args.scenario = r.get("scenario", "class")
    run_args.threads = threads
    run_args.no_progress = True
    return run_args


def _mean_sd(values: list[float | None]) -> str:
    xs = [v for v in values if v is not None]
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def _group(results: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    """The runs that match every ``key=value``; class-incremental runs unless ``scenario`` is given
    (reports from before the domain-incremental mode have no ``scenario``: class-incremental)."""
    match.setdefault("scenario", "class")
    return [r for r in results if all(r.get(k, "class" if k == "scenario" else None) == v for k, v in match.items())]


# Settings a run's tables may legitimately differ in: the seed, and what an ablation switches off.
VARYING_SETTINGS = frozenset({"training.seed", "text_diversity", "fusion.kind", "loss.kind"})
_AAVFM_ONLY_KEYS = frozenset(f"fusion.{name}" for name in AAVFM_ONLY_FIELDS)
# Feature replay's settings reach only the strategies that replay (those that freeze old prototypes).
_REPLAY_ONLY_KEYS = frozenset({"replayed_features", "replay_weighting"})


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def setting_differences(results: list[dict[str, Any]]) -> list[str]:
    """One line per setting in which the runs differ (beyond seed and ablation), naming which run
    used which value, so a folder that mixes runs made with other settings is not averaged silently.
    AAVFM's own settings are compared only among runs that use AAVFM, replay's only among runs that
    replay; a setting a report predates reads as the behaviour of its time, as a saved learner's does.
    Reports written before runs recorded the backbone's settings get one line of their own."""
    recorded: list[tuple[str, dict[str, Any], bool, bool, bool]] = []  # run, settings, backbone?, concat?, replays?
    for r in results:
        learner = {**SETTINGS_BEFORE_THEY_WERE_SAVED["learner"], **r["learner_config"]}
        for part, before in SETTINGS_BEFORE_THEY_WERE_SAVED.items():
            if isinstance(learner.get(part), dict):
                learner[part] = {**before, **learner[part]}
        settings = {**_flat(learner), "quick": r["quick"], "evaluated_on": r["evaluated_on"]}
        settings["training.min_steps"] = _min_steps_in_effect(learner["training"], r["per_task"])
        settings.update(_flat(r.get("backbone_config", {}), "backbone."))
        strategy = STRATEGIES.get(r["strategy"])
        replays = strategy is None or strategy.freezes_old_prototypes
        recorded.append((run_name(r).removesuffix(".json"), settings, "backbone_config" in r,
                         _fusion_kind(r) == "concat", replays))
    keys = {k for _, settings, _, _, _ in recorded for k in settings} - VARYING_SETTINGS
    by_key: dict[str, dict[str, list[str]]] = {}
    for name, settings, has_backbone, concat, replays in recorded:
        for key in keys:
            if key.startswith("backbone.") and not has_backbone:
                continue  # reported once below
            if concat and key in _AAVFM_ONLY_KEYS:
                continue  # AAVFM's settings do not reach a run that concatenates
            if not replays and key in _REPLAY_ONLY_KEYS:
                continue  # nor replay's a run that does not replay
            value = json.dumps(settings[key]) if key in settings else "(not recorded)"
            # A head's settings are the strategy's own choice: compared among runs of one strategy.
            compared = f"{key} ({name.split('-T')[0]})" if key.startswith("head.") else key
            by_key.setdefault(compared, {}).setdefault(value, []).append(name)
    unrecorded = [name for name, _, has_backbone, _, _ in recorded if not has_backbone]
    lines = []
    for key, values in sorted(by_key.items()):
        if len(values) > 1:
            lines.append(f"`{key}`: " + "; ".join(f"{v} in {', '.join(names)}" for v, names in sorted(values.items())))
    if unrecorded and len(unrecorded) < len(results):
        lines.append(f"backbone settings not recorded in {', '.join(unrecorded)}")
    return lines


def _min_steps_in_effect(training: dict[str, Any], per_task: list[dict[str, Any]]) -> Any:
    """A run's ``min_steps``, or "never reached" where no task was small enough for it to add an
    epoch: runs that trained every task for exactly ``epochs`` agree, whatever their ``min_steps``."""
    config = TrainingConfig(**training)
    if any(config.epochs_for(task.get("train_examples", 0)) > config.epochs for task in per_task):
        return config.min_steps
    return "never reached"


def _fusion_kind(result: dict[str, Any]) -> str:
    """The fusion a run used. Reports written before they recorded the config in effect name the
    requested ``fusion.kind`` ("aavfm") for strategies that always concatenate; the strategy decides."""
    requested = result["learner_config"].get("fusion", {}).get("kind", "aavfm")
    strategy = STRATEGIES.get(result["strategy"])
    return strategy.fusion_used(requested) if strategy is not None else requested


def _threads(result: dict[str, Any]) -> int:
    """PyTorch threads a run used (files written before the field existed named it ``cpus``)."""
    machine = result["machine"]
    threads: int = machine.get("threads", machine["cpus"])
    return threads


def tables(results: list[dict[str, Any]], differences: Sequence[str] = ()) -> str:
    """Markdown tables: per T and modality path, one row per strategy (mean ± sd over seeds)."""
    lines: list[str] = []
    if differences:
        lines += ["**These runs were not all made with the same settings:**", "",
                  *[f"- {d}" for d in differences], ""]
    for t in sorted({r["tasks"] for r in _group(results)}, key=lambda t: (t != 5, t)):
        for path in ("av", "visual", "audio"):
            lines += _figures_table(f"T = {t}, path `{path}`", path, results, tasks=t, ablation="none")
    rows = []
    for s in ("mcil", "mcil-paper"):
        for a in ("none", *ABLATIONS):
            group = _group(results, strategy=s, tasks=5, ablation=a)
            if group:
                cells = [_mean_sd([g["figures"].get("av", {}).get(f) for g in group]) for f in FIGURES]
                rows.append(f"| {s} {'(full)' if a == 'none' else a} | {len(group)} | " + " | ".join(cells) + " |")
    if rows:
        lines += ["### Ablation (T = 5, path `av`)", "", "| variant | seeds | " + " | ".join(FIGURES) + " |",
                  "|---|---|" + "---|" * len(FIGURES), *rows, ""]
    rows = []
    for s in STRATEGY_ORDER:
        group = _group(results, strategy=s, tasks=5, ablation="none")
        for threads in sorted({_threads(g) for g in group}):
            runs = [g for g in group if _threads(g) == threads]
            per_task = [t["train_seconds"] for g in runs for t in g["per_task"]]
            peak = [g["peak_rss_mib"] for g in runs]
            rows.append(f"| {s} | {threads} | {len(runs)} | {_mean_sd(per_task)} | {_mean_sd(peak)} "
                        f"| {runs[0]['parameters']['learned_total']} |")
    if rows:
        lines += ["### Cost (T = 5)", "",
                  "Train seconds per task: mean ± sd over every task of every run in the row, pooled (so "
                  "`joint`, whose tasks grow, spreads widely); peak RSS: over the runs.", "",
                  "| strategy | threads | runs | train seconds per task | peak RSS MiB | learned parameters |",
                  "|---|---|---|---|---|---|", *rows, ""]
    for path in ("av", "visual", "audio"):
        lines += _figures_table(f"Domain-incremental (one speaker per task, every class in each), path `{path}`",
                                path, results, scenario="domain")
    orders = {(g["tasks"], g["seed"]): g["class_order"] for g in _group(results)}
    if orders:
        lines += ["### Class orders", ""] + [f"- T = {t}, seed {s}: {o}" for (t, s), o in sorted(orders.items())]
    speakers = {g["seed"]: g["class_order"] for g in _group(results, scenario="domain")}
    if speakers:
        lines += ["", "### Speaker orders (domain-incremental)", ""]
        lines += [f"- seed {s}: {[name for (name,) in o]}" for s, o in sorted(speakers.items())]
    return "\n".join(lines) + "\n"


def _figures_table(title: str, path: str, results: list[dict[str, Any]], **match: Any) -> list[str]:
    """A section with one row per strategy of the runs matching ``match`` (mean ± sd of every figure of
    ``path`` over them); no line when no run matches."""
    rows = []
    for s in STRATEGY_ORDER:
        group = _group(results, strategy=s, **match)
        if group:
            cells = [_mean_sd([g["figures"].get(path, {}).get(f) for g in group]) for f in FIGURES]
            rows.append(f"| {s} | {len(group)} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [f"### {title}", "", "| strategy | seeds | " + " | ".join(FIGURES) + " |",
            "|---|---|" + "---|" * len(FIGURES), *rows, ""]


def curve_name(tasks: int) -> str:
    """The forgetting curve's file: ``forgetting_curve.png`` for the headline T = 5, else ``_T<n>``."""
    return "forgetting_curve.png" if tasks == 5 else f"forgetting_curve_T{tasks}.png"


SUITE_TITLES = {"avmnist": "AV-MNIST", "esc-cifar": "ESC-CIFAR"}


def plot_forgetting_curve(results: list[dict[str, Any]], path: Path, tasks: int = 5, suite: str = "avmnist") -> bool:
    """Accuracy on all classes seen so far after each task, one line per strategy (mean over seeds).

    Writes nothing and returns False when no main-row run with ``tasks`` tasks exists yet."""
    if not any(_group(results, strategy=s, tasks=tasks, ablation="none") for s in STRATEGY_ORDER):
        return False
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the forgetting-curve plot needs matplotlib: pip install 'mcil-daemon[bench]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in STRATEGY_ORDER:
        group = _group(results, strategy=s, tasks=tasks, ablation="none")
        if not group:
            continue
        curves = [g["figures"]["av"]["incremental_accuracy"] for g in group]
        mean = [statistics.mean(c[i] for c in curves) for i in range(tasks)]
        ax.plot(range(1, tasks + 1), mean, marker="o", label=f"{s} (n={len(group)})")
    ax.set_xlabel("task learned")
    ax.set_ylabel("accuracy on all seen classes (%)")
    ax.set_xticks(range(1, tasks + 1))
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{SUITE_TITLES.get(suite, suite)}, T = {tasks}, fused (av) path")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
