"""Whether the daemon runs light (service/light_mode.py): the default where the configuration allows."""

from __future__ import annotations

import pytest

from service.__main__ import build_parser, config_from_args
from service.config_loader import load_config
from service.errors import ConfigError
from service.light_mode import gpu_visible, pytorch_sees_a_gpu, runs_light


def _server(**overrides: str) -> object:
    return load_config(None, {f"server.{key}": value for key, value in overrides.items()}).server


def test_the_default_configuration_runs_light_when_the_learner_is_on_the_cpu() -> None:
    default = load_config().server
    assert default.light is None and default.learner_idle_seconds == 120.0
    assert runs_light(_server(device="cpu"))[0]
    light, why = runs_light(default)  # device auto: a GPU PyTorch sees keeps the learner in one process
    assert light is not gpu_visible()
    assert why


@pytest.mark.parametrize(("overrides", "named"), [
    ({"preset": "tiny"}, "server.preset"),
    ({"strategy": "cign"}, "server.strategy"),
    ({"compiled": "false"}, "server.compiled"),
    ({"device": "cuda"}, "server.device cuda"),
    ({"device": "cuda:1"}, "server.device cuda:1"),
    ({"light": "false"}, "server.light is false"),
])
def test_what_cannot_or_need_not_run_light_runs_in_one_process_and_says_why(overrides: dict[str, str], named: str) -> None:
    light, why = runs_light(_server(device="cpu", **overrides) if "device" not in overrides else _server(**overrides))
    assert not light and named in why


def test_light_true_insists_and_refuses_by_name_what_cannot_run_light() -> None:
    assert runs_light(_server(light="true", device="auto")) == (True, "server.light is true")
    for overrides, field in (({"preset": "tiny"}, "server.preset"), ({"device": "cuda:0"}, "server.device")):
        with pytest.raises(ConfigError) as refused:
            runs_light(_server(light="true", **overrides))
        assert refused.value.field == field


def test_flags_and_words_for_the_switch() -> None:
    parse = build_parser().parse_args
    assert config_from_args(parse(["serve", "--light"])).server.light is True
    assert config_from_args(parse(["serve", "--no-light"])).server.light is False
    assert config_from_args(parse(["serve", "--set", "server.light=auto"])).server.light is None
    assert load_config(None, {"server.light": "null"}).server.light is None


def test_cuda_visible_devices_that_hide_every_gpu_hide_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert not gpu_visible()
        assert runs_light(load_config().server)[0]  # device auto, no GPU to be seen: light


def test_the_gpu_probe_answers_as_pytorch_does() -> None:
    import torch

    assert pytorch_sees_a_gpu() is torch.cuda.is_available()  # asked in a child process


def test_check_config_says_what_was_decided_and_refuses_what_cannot_run_light(
        capsys: pytest.CaptureFixture[str]) -> None:
    from service.__main__ import main

    assert main(["check-config", "--device", "cpu"]) == 0
    assert "light: yes (lite + mcil" in capsys.readouterr().err
    assert main(["check-config", "--preset", "tiny"]) == 0
    assert "light: no (server.preset:" in capsys.readouterr().err
    assert main(["check-config", "--light", "--preset", "tiny"]) == 2
    assert "server.preset" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="true, false or auto"):
        load_config(None, {"server.light": "sometimes"})
