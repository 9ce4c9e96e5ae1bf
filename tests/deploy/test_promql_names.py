"""The PromQL name extraction the dashboard and alert tests rely on."""

from __future__ import annotations

from .conftest import metric_names


def test_names_are_found_through_functions_aggregations_and_matchers() -> None:
    expr = ('histogram_quantile(0.99, sum by (instance, le) '
            '(rate(mcil_request_duration_seconds_bucket{rpc="Classify", code=~"OK|sum"}[$__rate_interval])))')
    assert metric_names(expr) == {"mcil_request_duration_seconds_bucket"}


def test_binary_operators_offsets_and_numbers() -> None:
    expr = ('(increase(a_total{state="failed"}[15m]) > 0 or (b > 1e3 unless b offset 15m)) '
            'and on (instance) (time() - max by (instance) (c_seconds)) > 6 * 3600')
    assert metric_names(expr) == {"a_total", "b", "c_seconds"}


def test_grafana_variables_are_not_names() -> None:
    assert metric_names('up{job="mcil", instance=~"$instance"} * ${factor}') == {"up"}


def test_a_misspelt_name_is_reported_as_is() -> None:
    assert metric_names("sum(rate(mcil_request_total[5m]))") == {"mcil_request_total"}
