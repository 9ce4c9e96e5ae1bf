"""Configuration: file + flags, typed and validated with errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.__main__ import build_parser, config_from_args
from service.config_loader import load_config
from service.errors import ConfigError


def test_defaults_are_the_product_defaults() -> None:
    config = load_config()
    assert config.server.preset == "lite"
    assert config.server.runner == "pytorch"
    assert config.batching.enabled and config.batching.max_batch_size >= 1


def test_file_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "mcild.yaml"
    path.write_text("server:\n  listen: 0.0.0.0:6000\n  preset: tiny\nlearning:\n  epochs: 3\n"
                    "gate:\n  max_forgetting: 5\n")
    args = build_parser().parse_args(["serve", "--config", str(path), "--listen", "127.0.0.1:7000",
                                      "--state-dir", str(tmp_path / "s"), "--set", "batching.max_delay_ms=1.5"])
    config = config_from_args(args)
    assert config.server.listen == "127.0.0.1:7000"  # the flag wins over the file
    assert config.server.preset == "tiny"  # from the file
    assert config.server.state_dir == tmp_path / "s"
    assert config.learning.epochs == 3
    assert config.gate.max_forgetting == 5.0
    assert config.batching.max_delay_ms == 1.5


def test_json_and_toml_files(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{"retention": {"max_versions": 3}}')
    (tmp_path / "c.toml").write_text('[retention]\nmax_versions = 4\n')
    assert load_config(tmp_path / "c.json").retention.max_versions == 3
    assert load_config(tmp_path / "c.toml").retention.max_versions == 4


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"server.listen": "nohost"}, "server.listen"),
        ({"server.listen": "127.0.0.1:99999"}, "server.listen"),
        ({"server.runner": "magic"}, "server.runner"),
        ({"server.device": "gpu"}, "server.device"),
        ({"learning.epochs": "many"}, "learning.epochs"),
        ({"learning.min_steps": "-1"}, "learning.min_steps"),
        ({"learning.held_out_fraction": "1.5"}, "learning.held_out_fraction"),
        ({"learning.min_examples_per_class": "1"}, "learning.min_examples_per_class"),
        ({"batching.enabled": "maybe"}, "batching.enabled"),
        ({"gate.max_forgetting": "120"}, "gate.max_forgetting"),
        ({"gate.path": "smell"}, "gate.path"),
        ({"security.tls_cert": "/nonexistent.pem"}, "security.tls_cert"),
        ({"security.require_token_for_all": "true"}, "security.require_token_for_all"),
        ({"server.colour": "blue"}, "server.colour"),
        ({"server.light": "true", "server.learner_idle_seconds": "0"}, "server.learner_idle_seconds"),
        ({"server.light": "sometimes"}, "server.light"),
        ({"server.base_precision": "int4"}, "server.base_precision"),
        ({"server.base_precision": "int8", "server.compiled": "false"}, "server.base_precision"),
        ({"server.base_device": "gpu"}, "server.base_device"),
        ({"server.base_device": "cuda:one"}, "server.base_device"),
        ({"server.base_device": "cuda", "server.compiled": "false"}, "server.base_device"),
        ({"server.base_device": "cuda", "server.base_precision": "int8"}, "server.base_precision"),
        ({"server.base_precision": "fp16"}, "server.base_precision"),  # fp16: TensorRT engines only
        ({"nosuchsection.x": "1"}, "nosuchsection"),
    ],
)
def test_bad_values_name_the_field(overrides: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert info.value.field == field
    assert field in str(info.value)


def test_unparsable_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist|cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_cli_reports_config_errors_with_exit_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    from service.__main__ import main

    assert main(["check-config", "--listen", "bad"]) == 2
    assert "server.listen" in capsys.readouterr().err


def test_environment_variables_override_the_file_and_flags_override_them(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server: {preset: tiny, max_workers: 8, max_open_streams: 4}\n")
    env = {"MCIL_SERVER__MAX_WORKERS": "16", "MCIL_GATE__MAX_FORGETTING": "null", "MCIL_TARGET": "h:1",
           "MCIL_LIMITS__UPLOAD_IDLE_SECONDS": "5"}
    config = load_config(path, {"limits.upload_idle_seconds": "7"}, env)
    assert config.server.preset == "tiny" and config.server.max_workers == 16  # env over the file
    assert config.gate.max_forgetting is None and config.limits.upload_idle_seconds == 7.0  # flags over env
    with pytest.raises(ConfigError) as info:
        load_config(None, {}, {"MCIL_SERVER__MAX_WORKERS": "many"})
    assert "environment variable MCIL_SERVER__MAX_WORKERS" in str(info.value) and "integer" in str(info.value)
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(None, {}, {"MCIL_NOPE__X": "1"})
