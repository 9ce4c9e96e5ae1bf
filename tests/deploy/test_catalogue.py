"""The metrics catalogue in docs/operations.md matches the daemon's metric definitions and exposition."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Callable

from service.metrics import METRICS, STANDARD_SERIES, ServiceMetrics

from .conftest import ROOT


def _exposition_families(text: str) -> dict[str, str]:
    """``{family: type}`` from the ``# TYPE`` lines of a Prometheus text exposition."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M))


def test_docs_table_equals_the_generated_catalogue(catalogue: ModuleType) -> None:
    doc = ROOT / "docs" / "operations.md"
    section = catalogue.section_in(doc.read_text())
    assert section, f"{doc} lacks the catalogue markers"
    assert section == catalogue.render(), "docs/operations.md is stale: run python deploy/catalogue.py --write"


def test_check_mode_detects_a_stale_document(catalogue: ModuleType, tmp_path: Path) -> None:
    stale = tmp_path / "operations.md"
    text = (ROOT / "docs" / "operations.md").read_text()
    stale.write_text(text.replace("| `mcil_model_version` | gauge |", "| `mcil_model_version` | counter |"))
    assert catalogue.main(["--check", "--doc", str(stale)]) == 1
    assert catalogue.main(["--write", "--doc", str(stale)]) == 0
    assert catalogue.main(["--check", "--doc", str(stale)]) == 0
    assert stale.read_text() == text


def test_every_metric_has_a_row_with_its_type_and_labels(catalogue: ModuleType) -> None:
    rendered = catalogue.render()
    for spec in METRICS:
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "-"
        assert f"| `{spec.name}` | {spec.kind} | {catalogue.unit_of(spec.name)} | {labels} |" in rendered


def test_units_follow_the_names(catalogue: ModuleType) -> None:
    assert catalogue.unit_of("mcil_request_duration_seconds") == "seconds"
    assert catalogue.unit_of("mcil_upload_bytes_total") == "bytes"
    assert catalogue.unit_of("mcil_continual_forgetting_ratio") == "ratio (0-1)"
    assert catalogue.unit_of("mcil_model_commit_timestamp_seconds") == "Unix time, seconds"
    assert catalogue.unit_of("mcil_requests_total") == "count"


def test_catalogue_equals_what_a_daemon_registry_exposes(catalogue: ModuleType) -> None:
    metrics = ServiceMetrics()
    text = metrics.render().decode()
    families = _exposition_families(text)
    ours = {name: kind for name, kind in families.items() if name.startswith("mcil_")}
    assert ours == {spec.name: spec.kind for spec in METRICS}
    # The process and platform collectors: memory, CPU, file descriptors, the Python version.
    series = set(re.findall(r"^([a-z_]+)(?:\{| )", text, flags=re.M))
    assert set(STANDARD_SERIES) <= series, sorted(set(STANDARD_SERIES) - series)
    assert set(families) - set(ours) <= set(STANDARD_SERIES)


def test_promtool_accepts_the_exposition_with_every_series_present(
        promtool: Callable[..., object]) -> None:
    metrics = ServiceMetrics()
    metrics.observe_request("Classify", "OK", 0.02)
    metrics.observe_request("LearnNewClasses", "INVALID_ARGUMENT", 0.5)
    metrics["mcil_classify_batch_size"].observe(4)
    metrics["mcil_classify_queue_delay_seconds"].observe(0.003)
    metrics["mcil_classify_samples_total"].labels("av").inc()
    metrics["mcil_upload_bytes_total"].inc(1000)
    metrics["mcil_auth_failures_total"].labels("UNAUTHENTICATED").inc()
    metrics["mcil_jobs_total"].labels("succeeded").inc()
    metrics["mcil_job_duration_seconds"].labels("succeeded").observe(12.0)
    figures = {"av": {"average_accuracy": 90.0, "last_accuracy": 85.0, "forgetting": 4.0, "bwt": -4.0,
                      "fwt": 1.0, "m1": 80.0, "m2": 0.7}}
    metrics.set_model(version=3, classes=6, tasks=3, preset="tiny", strategy="mcil", runner="pytorch", device="cpu",
                      committed_at=1.7e9, figures=figures, held_out_samples=60)
    text = metrics.render().decode()
    result = promtool("check", "metrics", input=text)
    assert result.returncode == 0, result.stdout + result.stderr  # type: ignore[attr-defined]
    assert 'mcil_continual_forgetting_ratio{path="av"} 0.04' in text
