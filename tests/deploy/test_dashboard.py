"""The Grafana dashboard and provisioning: generated JSON up to date, queries name exported series."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any, Iterator

import pytest
import yaml

from .conftest import DEPLOY, load_script, metric_names

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "mcil-daemon.json"


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def expressions(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every query in the dashboard: panels, annotations, variables."""
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']}", annotation["expr"]


def test_json_equals_the_generator() -> None:
    dashboard = load_script("grafana/dashboard.py")
    assert dashboard.main(["--check"]) == 0, "run python deploy/grafana/dashboard.py --write"


def test_every_query_names_only_exported_series(board: dict[str, Any], exported: set[str]) -> None:
    seen = 0
    for where, expr in expressions(board):
        names = metric_names(expr)
        assert names, f"{where}: no series in {expr!r}"
        assert names <= exported, f"{where}: unknown series {sorted(names - exported)} in {expr!r}"
        seen += 1
    assert seen >= 30
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            assert query.startswith("label_values(")
            metric = query.removeprefix("label_values(").split(",")[0].strip()
            assert metric in exported, variable["name"]


def test_the_panels_the_issue_asks_for(board: dict[str, Any], catalogue: ModuleType) -> None:
    """Traffic, latency percentiles, batch sizes, queue depth, version and commits, per-path figures."""
    by_title = {p["title"]: p for p in board["panels"]}
    wanted = {
        "Requests per second by method": {"mcil_requests_total"},
        "Classify latency (p50, p90, p99)": {"mcil_request_duration_seconds_bucket"},
        "Classify batch size": {"mcil_classify_batch_size_bucket", "mcil_classify_batch_size_sum"},
        "Queue depth": {"mcil_classify_queue_depth", "mcil_jobs_queued"},
        "Served version": {"mcil_model_version"},
        "Served version over time": {"mcil_model_version"},
        "Learning jobs ended": {"mcil_jobs_total"},
        "Average and last accuracy over versions": {"mcil_continual_average_accuracy_ratio",
                                                    "mcil_continual_last_accuracy_ratio"},
        "Forgetting over versions": {"mcil_continual_forgetting_ratio"},
        "BWT and FWT over versions": {"mcil_continual_bwt_ratio", "mcil_continual_fwt_ratio"},
        "M1 and M2 over versions": {"mcil_continual_m1_ratio", "mcil_continual_m2"},
    }
    for title, metrics in wanted.items():
        assert title in by_title, title
        names = set().union(*(metric_names(t["expr"]) for t in by_title[title]["targets"]))
        assert metrics <= names, title
    quantiles = [t["expr"] for t in by_title["Classify latency (p50, p90, p99)"]["targets"]]
    assert [e.split(",")[0] for e in quantiles] == ["histogram_quantile(0.5", "histogram_quantile(0.9",
                                                     "histogram_quantile(0.99"]
    # Per modality path: every continual-learning query filters on the $path variable.
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            if "mcil_continual_" in target["expr"] and "held_out" not in target["expr"]:
                assert 'path=~"$path"' in target["expr"], panel["title"]
    # The accuracy-matrix panel appears exactly when the daemon exports per-task accuracy.
    has_matrix = "Accuracy matrix after the latest task" in by_title
    assert has_matrix == ("mcil_continual_task_accuracy_ratio" in catalogue.exported_series())


def test_layout_ids_and_data_source(board: dict[str, Any]) -> None:
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"] and panel["description"], panel["title"]
    assert board["uid"] == "mcil-daemon"


def test_provisioning_points_at_prometheus_and_the_dashboard_folder() -> None:
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert source["uid"] == "mcil-prometheus"
    board = json.loads(DASHBOARD.read_text())
    ds_var = next(v for v in board["templating"]["list"] if v["name"] == "datasource")
    assert ds_var["current"]["value"] == source["uid"]

    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "mcil.yml").read_text())
    (provider,) = providers["providers"]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) if v.count(":") == 2 else v.split(":", 1)
                  for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
