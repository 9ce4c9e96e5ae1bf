"""The light daemon's ``/metrics`` page (service/light_metrics.py): each family from one process, the
serving process's own process series, the learner's renamed, and none of the learner's while it sleeps.

The learner here is a real ``ServiceMetrics`` served over HTTP on loopback, as the learner child
serves its own; tests/service/test_light.py reads the page of a real light daemon.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from service.light_metrics import MetricsPage
from service.metrics import MetricsEndpoint, ServiceMetrics


def _families(page: MetricsPage) -> dict[str, object]:
    parsed = list(text_string_to_metric_families(page.render().decode()))
    names = [family.name for family in parsed]
    assert len(names) == len(set(names)), "a family served twice"
    return {family.name: family for family in parsed}


def test_process_series_are_the_serving_process_and_the_learner_s_are_renamed() -> None:
    learner = ServiceMetrics()
    learner["mcil_model_version"].set(3)
    endpoint = MetricsEndpoint(learner, "127.0.0.1", 0)
    sleeping = [False]
    try:
        own = ServiceMetrics()
        own["mcil_classify_samples_total"].labels("av").inc()
        page = MetricsPage(own, f"http://127.0.0.1:{endpoint.port}/metrics", asleep=lambda: sleeping[0])
        awake = _families(page)
        assert awake["mcil_model_version"].samples[0].value == 3  # the learner's
        assert "mcil_classify_samples" in awake  # the serving process's own
        for name in ("process_resident_memory_bytes", "mcil_learner_process_resident_memory_bytes",
                     "mcil_learner_process_cpu_seconds", "python_info"):
            assert name in awake, name
        assert not any(name.startswith("mcil_learner_python") for name in awake)
        cpu = awake["mcil_learner_process_cpu_seconds"]
        assert cpu.type == "counter" and cpu.samples[0].name == "mcil_learner_process_cpu_seconds_total"

        page.hold()
        sleeping[0] = True
        endpoint.close()  # there is no learner process while it sleeps
        endpoint = None
        asleep = _families(page)
        assert asleep["mcil_model_version"].samples[0].value == 3  # its page as read before it slept
        assert "process_resident_memory_bytes" in asleep  # the serving process is still there
        assert not any(name.startswith("mcil_learner_") for name in asleep)
    finally:
        if endpoint is not None:
            endpoint.close()
