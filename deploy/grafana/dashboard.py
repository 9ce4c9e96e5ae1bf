"""The Grafana dashboard of the daemon, written as code: deploy/grafana/dashboards/mcil-daemon.json.

    python deploy/grafana/dashboard.py            # print the dashboard JSON
    python deploy/grafana/dashboard.py --write    # rewrite deploy/grafana/dashboards/mcil-daemon.json
    python deploy/grafana/dashboard.py --check    # exit 1 if the JSON file differs from this code

Every panel lists the PromQL behind it; each query names only series the daemon exports
(deploy/catalogue.py) or the ``up`` series Prometheus adds to every target, which the tests check
against the catalogue and a live scrape. Grafana variables: ``$datasource``, ``$instance`` (which
daemon) and ``$path`` (modality paths: av = image and sound, visual = image only, audio = sound only).

The continual-learning figures are gauges set at every commit (or rollback): plotted over time they
step at each new version, and the "Served version changed" annotation marks those steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "dashboards" / "mcil-daemon.json"
UID = "mcil-daemon"
DS = {"type": "prometheus", "uid": "${datasource}"}
INST = 'instance=~"$instance"'
NOT_STREAMS = 'rpc!~"WatchJob|Check|Watch|ServerReflectionInfo"'
TASK_ACCURACY = "mcil_continual_task_accuracy_ratio"
"""Per-task accuracy after the latest task (last row of the accuracy matrix); used when exported."""

PANEL_WIDTH = 24


def target(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False, table: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend or "__auto",
                         "range": not instant, "instant": instant}
    if table:
        t["format"] = "table"
    return t


def targets(*pairs: tuple[str, str], instant: bool = False) -> list[dict[str, Any]]:
    return [target(expr, legend, chr(ord("A") + i), instant=instant) for i, (expr, legend) in enumerate(pairs)]


def timeseries(title: str, description: str, tgts: list[dict[str, Any]], unit: str = "short", *,
               width: int = 12, height: int = 8, stack: bool = False, draw: str = "line",
               minimum: float | None = None, maximum: float | None = None) -> dict[str, Any]:
    custom: dict[str, Any] = {"drawStyle": draw, "lineWidth": 1, "fillOpacity": 10 if draw == "line" else 80,
                              "showPoints": "auto", "spanNulls": False,
                              "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    if draw == "line":
        custom["lineInterpolation"] = "stepAfter" if unit in ("percentunit", "none") else "linear"
    defaults: dict[str, Any] = {"unit": unit, "custom": custom}
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    return {"type": "timeseries", "title": title, "description": description, "datasource": DS,
            "targets": tgts, "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "_size": (width, height)}


def stat(title: str, description: str, tgts: list[dict[str, Any]], unit: str = "none", *, width: int = 4,
         height: int = 4, decimals: int | None = 0, text_mode: str = "value") -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {"type": "stat", "title": title, "description": description, "datasource": DS, "targets": tgts,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "none", "textMode": text_mode, "justifyMode": "auto"},
            "_size": (width, height)}


def bargauge(title: str, description: str, tgts: list[dict[str, Any]], unit: str, *, width: int = 12,
             height: int = 8, minimum: float = 0.0, maximum: float = 1.0) -> dict[str, Any]:
    return {"type": "bargauge", "title": title, "description": description, "datasource": DS, "targets": tgts,
            "fieldConfig": {"defaults": {"unit": unit, "min": minimum, "max": maximum, "decimals": 1},
                            "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True},
            "_size": (width, height)}


def table(title: str, description: str, tgts: list[dict[str, Any]], *, width: int = 8, height: int = 4,
          exclude: Sequence[str] = ("Time", "Value", "__name__", "job")) -> dict[str, Any]:
    return {"type": "table", "title": title, "description": description, "datasource": DS, "targets": tgts,
            "fieldConfig": {"defaults": {}, "overrides": []}, "options": {"showHeader": True},
            "transformations": [{"id": "organize", "options": {"excludeByName": {name: True for name in exclude}}}],
            "_size": (width, height)}


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (PANEL_WIDTH, 1)}


def quantiles(metric: str, selector: str, by: str = "", qs: Sequence[float] = (0.5, 0.9, 0.99),
              legend_prefix: str = "") -> list[tuple[str, str]]:
    group = f"{by}, le" if by else "le"
    out = []
    for q in qs:
        expr = f"histogram_quantile({q:g}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))"
        legend = f"{legend_prefix}p{round(q * 100):d}" + (f" {{{{{by}}}}}" if by else "")
        out.append((expr, legend))
    return out


def figure(name: str) -> str:
    return f'mcil_continual_{name}{{{INST}, path=~"$path"}}'


def panels(exported: set[str]) -> list[dict[str, Any]]:
    """Every panel, in reading order (layout is computed in :func:`layout`)."""
    out: list[dict[str, Any]] = [
        row("Traffic"),
        timeseries("Requests per second by method",
                   "gRPC calls handled per second, by method (health checks and reflection left out). "
                   "Source: mcil_requests_total.",
                   targets((f"sum by (rpc) (rate(mcil_requests_total{{{INST}, {NOT_STREAMS}}}[$__rate_interval]))",
                            "{{rpc}}")), "reqps", width=8),
        timeseries("Errors per second by method and code",
                   "Calls that ended with a code other than OK. Client mistakes (INVALID_ARGUMENT, NOT_FOUND, "
                   "UNAUTHENTICATED) show here too; the McilHighErrorRatio alert counts server-side codes only.",
                   targets((f'sum by (rpc, code) (rate(mcil_requests_total{{{INST}, code!="OK"}}[$__rate_interval]))',
                            "{{rpc}} {{code}}")), "reqps", width=8),
        timeseries("Classified samples per second by modality path",
                   "Samples answered per second, by the path that answered: av (image and sound), visual "
                   "(image only), audio (sound only). Source: mcil_classify_samples_total.",
                   targets((f"sum by (path) (rate(mcil_classify_samples_total{{{INST}}}[$__rate_interval]))",
                            "{{path}}")), "short", width=8, stack=True),
        row("Latency"),
        timeseries("Classify latency (p50, p90, p99)",
                   "Time from receiving a successful Classify call to sending its answer, including the batcher's "
                   "wait. The McilClassifyLatencyHigh alert fires when p99 stays above 0.5 s.",
                   targets(*quantiles("mcil_request_duration_seconds", f'{INST}, rpc="Classify", code="OK"')),
                   "s", width=8),
        timeseries("p99 latency by method",
                   "99th percentile of call duration per unary method (LearnNewClasses includes the upload; "
                   "streams are left out).",
                   targets(*quantiles("mcil_request_duration_seconds", f"{INST}, {NOT_STREAMS}", by="rpc",
                                      qs=(0.99,))), "s", width=8),
        timeseries("Classify queue wait (p50, p99)",
                   "How long a Classify request waited in the batcher's queue before its model call.",
                   targets(*quantiles("mcil_classify_queue_delay_seconds", INST, qs=(0.5, 0.99))), "s", width=8),
        row("Batching and queues"),
        timeseries("Classify batch size",
                   "Samples per model call made by the Classify batcher: mean, median and p99. Larger batches "
                   "under load mean the batcher is merging concurrent calls.",
                   targets((f"sum(rate(mcil_classify_batch_size_sum{{{INST}}}[$__rate_interval])) / "
                            f"sum(rate(mcil_classify_batch_size_count{{{INST}}}[$__rate_interval]))", "mean"),
                           *quantiles("mcil_classify_batch_size", INST, qs=(0.5, 0.99))), "short", width=8),
        timeseries("Queue depth",
                   "Classify requests waiting for the batcher, and training jobs queued and running.",
                   targets((f"sum(mcil_classify_queue_depth{{{INST}}})", "Classify requests waiting"),
                           (f"sum(mcil_jobs_queued{{{INST}}})", "jobs queued"),
                           (f"sum(mcil_jobs_running{{{INST}}})", "jobs running")), "short", width=8),
        timeseries("Model calls per second",
                   "Batched model calls per second made by the Classify batcher.",
                   targets((f"sum(rate(mcil_classify_batch_size_count{{{INST}}}[$__rate_interval]))", "model calls")),
                   "ops", width=8),
        row("Model version and commits"),
        stat("Daemon up", "1 when Prometheus' last scrape of /metrics succeeded (series up, added by Prometheus).",
             targets((f'up{{job="mcil", {INST}}}', "{{instance}}")), width=3),
        stat("Served version", "The committed version that answers Classify (0 before anything was learned).",
             targets((f"mcil_model_version{{{INST}}}", "{{instance}}")), width=3),
        stat("Classes", "Classes the served version knows.",
             targets((f"mcil_model_classes{{{INST}}}", "{{instance}}")), width=3),
        stat("Tasks learned", "LearnNewClasses jobs the served version has learned.",
             targets((f"mcil_model_tasks{{{INST}}}", "{{instance}}")), width=3),
        stat("Last commit", "When the served version was committed.",
             targets((f"mcil_model_commit_timestamp_seconds{{{INST}}} * 1000", "{{instance}}")),
             "dateTimeFromNow", width=3, decimals=None),
        stat("Versions stored", "Committed versions kept in the state directory (retention.max_versions).",
             targets((f"mcil_model_versions_stored{{{INST}}}", "{{instance}}")), width=3),
        table("Served model", "Preset, strategy and runner of the served version (mcil_model_info labels).",
              [target(f"mcil_model_info{{{INST}}}", "", instant=True, table=True)], width=6),
        timeseries("Served version over time",
                   "Steps up at every commit, down at a rollback.",
                   targets((f"mcil_model_version{{{INST}}}", "version {{instance}}"),
                           (f"mcil_model_classes{{{INST}}}", "classes {{instance}}")), "none", width=8),
        timeseries("Learning jobs ended",
                   "Jobs that ended in each interval, by final state: succeeded (committed), rejected (commit "
                   "gate), failed, cancelled.",
                   targets((f"sum by (state) (increase(mcil_jobs_total{{{INST}}}[$__rate_interval]))", "{{state}}")),
                   "short", width=8, draw="bars", stack=True),
        timeseries("Mean job duration by state",
                   "Mean time from a job's start to its end (training, evaluation, commit), over the daemon's "
                   "lifetime.",
                   targets((f"sum by (state) (mcil_job_duration_seconds_sum{{{INST}}}) / "
                            f"sum by (state) (mcil_job_duration_seconds_count{{{INST}}})", "{{state}}")),
                   "s", width=8),
        timeseries("Upload bandwidth and refused calls",
                   "Bytes per second received by LearnNewClasses uploads, and calls per second refused by "
                   "authentication.",
                   targets((f"sum(rate(mcil_upload_bytes_total{{{INST}}}[$__rate_interval]))", "upload bytes/s"),
                           (f"sum by (code) (rate(mcil_auth_failures_total{{{INST}}}[$__rate_interval]))",
                            "refused {{code}}")), "Bps", width=12),
        stat("Held-out samples", "Held-out samples the continual-learning figures were measured on.",
             targets((f"mcil_continual_held_out_samples{{{INST}}}", "{{instance}}")), width=12, height=8),
        row("Continual learning (per modality path, after the latest task)"),
    ]
    if TASK_ACCURACY in exported:
        out.append(bargauge(
            "Accuracy matrix after the latest task",
            "The last row of the accuracy matrix: accuracy on each learned task's held-out examples, measured "
            "after the latest task, per modality path.",
            targets((f'{TASK_ACCURACY}{{{INST}, path=~"$path"}}', "{{path}} task {{task}}"), instant=True),
            "percentunit", width=24))
    out += [
        bargauge("Latest figures",
                 "The served version's figures, per modality path: average incremental accuracy, last accuracy, "
                 "forgetting, M1 (ratios; 0.9 = 90 %).",
                 targets((figure("average_accuracy_ratio"), "{{path}} average accuracy"),
                         (figure("last_accuracy_ratio"), "{{path}} last accuracy"),
                         (figure("forgetting_ratio"), "{{path}} forgetting"),
                         (figure("m1_ratio"), "{{path}} M1"), instant=True), "percentunit", width=12),
        bargauge("Latest transfer",
                 "Backward transfer BWT (negative = forgetting) and forward transfer FWT, per modality path.",
                 targets((figure("bwt_ratio"), "{{path}} BWT"), (figure("fwt_ratio"), "{{path}} FWT"),
                         instant=True), "percentunit", width=12, minimum=-1.0),
        timeseries("Average and last accuracy over versions",
                   "Average incremental accuracy Acc_avg and last accuracy A_T (pooled over every learned task) "
                   "of the served version; steps at each commit.",
                   targets((figure("average_accuracy_ratio"), "average {{path}}"),
                           (figure("last_accuracy_ratio"), "last {{path}}")),
                   "percentunit", width=12, minimum=0, maximum=1),
        timeseries("Forgetting over versions",
                   "Forgetting F_T: the mean drop from each old task's best accuracy. The McilForgettingHigh "
                   "alert fires above 0.10 on the av path.",
                   targets((figure("forgetting_ratio"), "{{path}}")), "percentunit", width=12, minimum=0),
        timeseries("BWT and FWT over versions",
                   "Backward transfer (how learning later tasks changed earlier ones) and forward transfer "
                   "(accuracy on a task before learning it, minus an untrained model's).",
                   targets((figure("bwt_ratio"), "BWT {{path}}"), (figure("fwt_ratio"), "FWT {{path}}")),
                   "percentunit", width=12),
        timeseries("M1 and M2 over versions",
                   "The seed paper's M1 (left axis, ratio) and M2 (right axis, unitless) of the served version.",
                   targets((figure("m1_ratio"), "M1 {{path}}"), (figure("m2"), "M2 {{path}}")),
                   "percentunit", width=12),
    ]
    m1m2 = out[-1]
    m1m2["fieldConfig"]["overrides"] = [{
        "matcher": {"id": "byRegexp", "options": "^M2 .*"},
        "properties": [{"id": "unit", "value": "none"}, {"id": "custom.axisPlacement", "value": "right"}],
    }]
    return out


def layout(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Assign ids and grid positions left to right, wrapping at the dashboard width."""
    x = y = 0
    row_height = 0
    placed = []
    for number, panel in enumerate(items, start=1):
        width, height = panel.pop("_size")
        if panel["type"] == "row" or x + width > PANEL_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        panel = {"id": number, "gridPos": {"h": height, "w": width, "x": x, "y": y}, **panel}
        placed.append(panel)
        x += width
        row_height = max(row_height, height)
        if panel["type"] == "row":
            x, y, row_height = 0, y + height, 0
    return placed


def dashboard(exported: set[str]) -> dict[str, Any]:
    return {
        "uid": UID,
        "title": "MCIL daemon",
        "description": "Traffic, latency, batching, model versions and continual-learning figures of mcild.",
        "tags": ["mcil", "continual-learning"],
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-24h", "to": "now"},
        "timezone": "",
        "annotations": {"list": [
            {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
             "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"},
            {"datasource": DS, "enable": True, "iconColor": "orange", "name": "Served version changed",
             "expr": f"changes(mcil_model_version{{{INST}}}[2m]) > 0", "step": "1m",
             "titleFormat": "Served version changed (commit or rollback)", "textFormat": "{{instance}}",
             "useValueForTime": False},
        ]},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {"text": "Prometheus (mcil)", "value": "mcil-prometheus"}, "hide": 0},
            {"name": "instance", "label": "Daemon", "type": "query", "datasource": DS,
             "query": {"query": "label_values(mcil_model_version, instance)", "refId": "instance"},
             "definition": "label_values(mcil_model_version, instance)", "refresh": 2, "multi": True,
             "includeAll": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "hide": 0},
            {"name": "path", "label": "Modality path", "type": "custom", "query": "av,visual,audio",
             "multi": True, "includeAll": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"},
             "options": [], "hide": 0},
        ]},
        "panels": layout(panels(exported)),
    }


def render() -> str:
    sys.path.insert(0, str(HERE.parent))
    from catalogue import exported_series  # deploy/catalogue.py

    return json.dumps(dashboard(exported_series()), indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 if the JSON file differs from this code")
    group.add_argument("--write", action="store_true", help=f"rewrite {OUTPUT.name}")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        OUTPUT.write_text(text)
        print(f"wrote {OUTPUT}")
    elif args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is out of date; run python deploy/grafana/dashboard.py --write", file=sys.stderr)
            return 1
        print(f"{OUTPUT} matches the code")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
