"""Integration: a real daemon scraped by a real Prometheus, queried through Prometheus' HTTP API.

The daemon (``python -m service serve``, tiny preset, two epochs) runs as a subprocess on loopback
and learns two tasks through the gRPC client; then Debian's ``prometheus`` starts with the project's
scrape config and alerting rules (scrape interval 1 s, target rewritten to the daemon's metrics port).
The test waits for the series, compares them with what the daemon reported over gRPC (the final job
and GetModelInfo), evaluates every dashboard query and checks the rules evaluate. Skipped when the
``prometheus`` binary is absent (deploy/ci/install-prometheus.sh installs it).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import pytest
import torch
import yaml

from model.synthetic import make_dataset
from service._proto import mcil_pb2
from service.client import Client, sample_from_arrays
from service.metrics import LEARNER_SERIES

from .conftest import DEPLOY, ROOT, metric_names

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAEMON_CONFIG = {
    "learning": {"epochs": 2, "batch_size": 16, "learning_rate": 0.003, "min_examples_per_class": 4},
    "batching": {"max_delay_ms": 2},
    "server": {"grace_seconds": 2},
}
TASKS = (["red", "green"], ["blue", "yellow"])
PER_CLASS = 10
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*", "$path": ".*"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class Daemon:
    def __init__(self, process: subprocess.Popen[bytes], port: int, metrics_port: int, logs: Path) -> None:
        self.process, self.port, self.metrics_port, self.logs = process, port, metrics_port, logs
        self.target = f"127.0.0.1:{port}"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    config = tmp_path / "mcild.yaml"
    config.write_text(yaml.safe_dump(DAEMON_CONFIG))
    metrics_port = free_port()
    out, err = tmp_path / "daemon.out", tmp_path / "daemon.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--config", str(config), "--listen", "127.0.0.1:0",
             "--metrics-listen", f"127.0.0.1:{metrics_port}", "--state-dir", str(tmp_path / "state"),
             "--preset", "tiny", "--log-level", "INFO"],
            stdout=stdout, stderr=stderr, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        def started() -> int:
            assert process.poll() is None, f"the daemon exited: {err.read_text()[-2000:]}"
            for line in out.read_text().splitlines():
                if line.startswith("mcild listening on port "):
                    return int(line.rsplit(" ", 1)[1])
            return 0

        port = wait_for("the daemon to listen", started, timeout=90)
        yield Daemon(process, port, metrics_port, err)
    finally:
        stop(process)


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: str) -> Any:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return list(data["result"])

    def values(self, expr: str, by: str = "") -> dict[str, float]:
        """``{label value: sample}`` of an instant query (``""`` key when ``by`` is empty)."""
        return {(r["metric"].get(by, "") if by else ""): float(r["value"][1]) for r in self.query(expr)}


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[[int], Prometheus]]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not found: install Debian's prometheus package (deploy/ci/install-prometheus.sh)")
    processes: list[subprocess.Popen[bytes]] = []

    def start(metrics_port: int) -> Prometheus:
        config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(DEPLOY / "prometheus" / name) for name in config["rule_files"]]
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        process = subprocess.Popen(
            [binary, f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        log.close()
        processes.append(process)
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as reply:
                return bool(reply.status == 200)

        wait_for("Prometheus to be ready", ready, timeout=30)
        return Prometheus(url)

    yield start
    for process in processes:
        stop(process)


def examples(names: list[str], first_index: int) -> list[mcil_pb2.LabeledExample]:
    data = make_dataset(names, PER_CLASS, seed=first_index, first_index=first_index)
    return [mcil_pb2.LabeledExample(label=s.label, sample=sample_from_arrays(s.image, s.audio, s.sample_rate))
            for s in data]


def healthcheck(target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DEPLOY / "healthcheck.py"), "--target", target, "--timeout", "5"],
                          capture_output=True, text=True, timeout=60)


def test_prometheus_scrapes_the_continual_learning_and_request_series(
        start_prometheus: Callable[[int], Prometheus], daemon: Daemon) -> None:
    health = healthcheck(daemon.target)
    assert health.returncode == 0 and "SERVING" in health.stdout, health.stdout + health.stderr

    # Teach two tasks, classify, and make one bad call, all through the real client.
    with Client(daemon.target, timeout=120) as client:
        jobs = []
        for i, names in enumerate(TASKS):
            reply = client.learn(names, examples(names, first_index=2 * i))
            jobs.append(client.wait(reply.job_id, timeout=300))
            assert jobs[-1].state == mcil_pb2.JOB_STATE_SUCCEEDED, jobs[-1].message
        probe = examples(["red", "green", "blue", "yellow"], first_index=0)[:8]
        sizes = (1, 3, 4)
        for size in sizes:
            client.classify([e.sample for e in probe[:size]])
        with pytest.raises(grpc.RpcError) as bad:
            client.classify([])
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        info = client.model_info()
    final = jobs[-1]
    assert final.committed_version == info.version == 2

    # promtool accepts the daemon's exposition (when promtool is installed beside prometheus).
    exposition = urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=10).read()
    promtool = shutil.which("promtool")
    if promtool is not None:
        lint = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=60)
        assert lint.returncode == 0, lint.stdout + lint.stderr

    # Every series the dashboard and the alerts name is in this live exposition (or is Prometheus' `up`,
    # or a light daemon's learner series, which tests/service/test_light_metrics.py reads).
    live = {"up", *LEARNER_SERIES}
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition.decode(), flags=re.M):
        live.update([family + s for s in ("_bucket", "_sum", "_count")] if kind == "histogram" else [family])
    board = json.loads((DEPLOY / "grafana" / "dashboards" / "mcil-daemon.json").read_text())
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    queries += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    for expr in queries:
        assert metric_names(expr) <= live, (expr, metric_names(expr) - live)

    prometheus = start_prometheus(daemon.metrics_port)
    wait_for("the first scrape", lambda: prometheus.values('up{job="mcil"}') == {"": 1.0}, timeout=60)
    wait_for("the continual-learning series",
             lambda: len(prometheus.query("mcil_continual_m2")) == len(final.metrics.paths), timeout=60)

    # Continual-learning figures: Prometheus holds what the final job measured (percent -> ratio).
    paths = set(final.metrics.paths)
    assert paths == {"av", "visual", "audio"}
    for figure in ("average_accuracy", "last_accuracy", "forgetting", "bwt", "fwt", "m1", "m2"):
        metric = "mcil_continual_m2" if figure == "m2" else f"mcil_continual_{figure}_ratio"
        scraped = prometheus.values(metric, by="path")
        if figure in ("average_accuracy", "last_accuracy", "forgetting", "m1", "m2"):
            assert set(scraped) == paths, (metric, scraped)
        for path, value in scraped.items():
            expected = getattr(final.metrics.paths[path], figure)
            expected = expected if figure == "m2" else expected / 100.0
            assert math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-12), (metric, path, value, expected)
    if "mcil_continual_task_accuracy_ratio" in live:  # the last row of the accuracy matrix, when exported
        for path in paths:
            row = prometheus.values(f'mcil_continual_task_accuracy_ratio{{path="{path}"}}', by="task")
            assert set(row) == {str(t) for t in range(1, final.metrics.tasks + 1)}, (path, row)
            expected = final.metrics.paths[path].new_task_accuracy / 100.0
            assert math.isclose(row[str(final.metrics.tasks)], expected, abs_tol=1e-12), (path, row, expected)
    assert prometheus.values("mcil_continual_held_out_samples") == {"": float(sum(final.metrics.held_out_per_task))}

    # The served model.
    assert prometheus.values("mcil_model_version") == {"": float(info.version)}
    assert prometheus.values("mcil_model_tasks") == {"": float(len(info.tasks))}
    assert prometheus.values("mcil_model_classes") == {"": float(sum(len(t.class_names) for t in info.tasks))}
    (model_info,) = prometheus.query("mcil_model_info")
    assert {k: model_info["metric"][k] for k in ("preset", "strategy", "runner", "device")} == \
        {"preset": info.preset, "strategy": info.strategy, "runner": info.runner, "device": info.device}
    assert info.device.startswith("cpu" if not torch.cuda.is_available() else "cuda")
    committed = prometheus.values("mcil_model_commit_timestamp_seconds")[""]
    assert abs(committed - time.time()) < 600

    # Requests and jobs.
    assert prometheus.values('mcil_requests_total{rpc="LearnNewClasses", code="OK"}') == {"": 2.0}
    assert prometheus.values('mcil_requests_total{rpc="Classify", code="OK"}') == {"": float(len(sizes))}
    assert prometheus.values('mcil_requests_total{rpc="Classify", code="INVALID_ARGUMENT"}') == {"": 1.0}
    assert prometheus.values('mcil_request_duration_seconds_count{rpc="Classify", code="OK"}') == \
        {"": float(len(sizes))}
    assert prometheus.values("sum(mcil_classify_samples_total)") == {"": float(sum(sizes))}
    assert prometheus.values("mcil_classify_batch_size_sum") == {"": float(sum(sizes))}
    assert prometheus.values('mcil_jobs_total{state="succeeded"}') == {"": 2.0}
    assert prometheus.values("mcil_upload_bytes_total")[""] > 0

    # Every dashboard query is valid PromQL here and has data (rates need a few scrapes).
    wait_for("three scrapes", lambda: prometheus.values('count_over_time(up{job="mcil"}[1m])').get("", 0) >= 3,
             timeout=30)
    empty = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, replacement in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, replacement)
            if not prometheus.query(expr) and not metric_names(expr) <= set(LEARNER_SERIES):  # one process: no learner child
                empty.append(panel["title"])
    assert set(empty) <= {"Upload bandwidth and refused calls"}, empty  # no call was refused by auth

    # The alerting rules load and evaluate; McilForgettingHigh agrees with the scraped forgetting.
    def evaluated() -> list[dict[str, Any]]:
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        return rules if all(r.get("lastEvaluation", "").startswith("2") for r in rules) and \
            all(r["health"] == "ok" for r in rules) else []

    loaded = wait_for("the rules to evaluate", evaluated, timeout=30)
    assert {r["name"] for r in loaded} >= {"McilDaemonDown", "McilForgettingHigh", "McilNoCommitWhileJobsSubmitted"}
    forgetting_av = prometheus.values('mcil_continual_forgetting_ratio{path="av"}')[""]
    time.sleep(2)  # two more rule evaluations after the series were present
    firing = {a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"] if a["state"] == "firing"}
    assert ("McilForgettingHigh" in firing) == (forgetting_av > 0.10), (forgetting_av, firing)
    assert "McilDaemonDown" not in firing and "McilLearningJobFailed" not in firing

    # Stopping the daemon: health check fails, Prometheus sees the target down.
    stop(daemon.process)
    assert healthcheck(daemon.target).returncode == 1
    wait_for("up to drop to 0", lambda: prometheus.values('up{job="mcil"}') == {"": 0.0}, timeout=30)
