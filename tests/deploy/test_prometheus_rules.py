"""Prometheus configuration and alerting rules: promtool checks, unit tests, and exported names."""

from __future__ import annotations

from typing import Callable

import yaml

from .conftest import DEPLOY, metric_names

PROMETHEUS = DEPLOY / "prometheus"
REQUIRED_ALERTS = {
    "McilDaemonDown",                  # daemon down
    "McilHighErrorRatio",              # error ratio
    "McilClassifyLatencyHigh",         # latency above a bound
    "McilLearningJobFailed",           # a learning job failed
    "McilForgettingHigh",              # forgetting above a bound after a commit
    "McilNoCommitWhileJobsSubmitted",  # no commit for the period while jobs were submitted
}


def _rules() -> list[dict[str, object]]:
    data = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_promtool_check_rules(promtool: Callable[..., object]) -> None:
    result = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr  # type: ignore[attr-defined]
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout  # type: ignore[attr-defined]


def test_promtool_check_config(promtool: Callable[..., object]) -> None:
    result = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr  # type: ignore[attr-defined]


def test_alert_unit_tests_pass(promtool: Callable[..., object]) -> None:
    """alerts_test.yml feeds synthetic series and states which alerts fire (and which do not)."""
    result = promtool("test", "rules", "alerts_test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr  # type: ignore[attr-defined]


def test_every_alert_the_operator_needs_exists_and_is_unit_tested() -> None:
    names = {str(rule["alert"]) for rule in _rules()}
    assert REQUIRED_ALERTS <= names
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    fired = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]
             if case.get("exp_alerts")}
    assert names - {"McilDaemonMissing"} <= fired, "every alert except absent() has a firing unit test"


def test_alert_expressions_name_only_exported_series(exported: set[str]) -> None:
    for rule in _rules():
        names = metric_names(str(rule["expr"]))
        assert names, rule["alert"]
        assert names <= exported, f"{rule['alert']}: unknown series {sorted(names - exported)}"


def test_scrape_config_targets_the_metrics_port_of_the_compose_service() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "mcil" and job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["mcild:9464"]
    assert config["rule_files"] == ["alerts.yml"]
