"""What a newcomer trips over in the ``mcil`` CLI: each case ends with a clear message and an exit
status, never a traceback (against a real daemon on loopback where one is needed)."""

from __future__ import annotations

import io
import socket
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile

from service.cli import main

from .conftest import Running, make_config

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_rollback_to_a_negative_version_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["rollback", "-1"])
    assert info.value.code == 2
    assert "versions are 0 (the untrained model) or a committed version number" in capsys.readouterr().err


def test_a_daemon_that_is_down_gets_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    target = f"127.0.0.1:{_free_port()}"
    assert main(["--target", target, "--timeout", "5", "status"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the daemon at {target}" in err and "MCIL_TARGET" in err and "Traceback" not in err


def test_connection_options_may_follow_the_command(start_daemon: Callable[..., Running], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    d = start_daemon(make_config(tmp_path))
    assert main(["status", "--target", d.target]) == 0
    assert "version 0" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["learn", "--clas", "red"], ["learn", "--class", "red", "--image", "x"],
                                  ["--targ", "h:1", "status"]])
def test_options_are_never_abbreviated(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2  # refused, not run as if the full option had been given
    err = capsys.readouterr().err
    assert "unrecognized arguments: --" in err or "invalid choice: 'h:1'" in err


def _class_dir(root: Path, count: int, wav: Callable[[int], bytes]) -> Path:
    from service.sample_files import write_sample_set

    write_sample_set(root, per_class=count, seed=0)
    audio = root / "red" / "audio"
    for i, path in enumerate(sorted(audio.glob("*.wav"))):
        path.write_bytes(wav(i))
    return root


def test_a_wav_that_does_not_decode_is_named_by_its_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _class_dir(tmp_path / "s", 4, lambda i: b"RIFF....WAVEfmt " if i == 2 else _wav(0.5))
    bad = sorted((root / "red" / "audio").glob("*.wav"))[2]
    assert main(["learn", "--class", "red", "--audio", str(root / "red" / "audio")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not a WAV or FLAC file" in err


def test_a_wav_cut_short_is_refused_by_the_cli_and_by_the_daemon(
        start_daemon: Callable[..., Running], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cut = _wav(0.5)[:100]  # a header and 28 frames
    root = _class_dir(tmp_path / "s", 4, lambda i: cut if i == 1 else _wav(0.5))
    bad = sorted((root / "red" / "audio").glob("*.wav"))[1]
    assert main(["learn", "--class", "red", "--audio", str(root / "red" / "audio")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "ms are needed" in err
    # The daemon refuses it too (a client that skips the CLI's check), naming the field.
    from service._proto import mcil_pb2
    from service.client import sample_from_files

    d = start_daemon(make_config(tmp_path / "state"))
    good = [mcil_pb2.LabeledExample(label="red", sample=sample_from_files(None, p))
            for p in sorted((root / "red" / "audio").glob("*.wav")) if p != bad]
    import grpc

    with pytest.raises(grpc.RpcError) as info:
        d.client.learn(["red"], [*good, mcil_pb2.LabeledExample(label="red", sample=sample_from_files(None, bad))])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "audio_bytes" in info.value.details() and "shorter than 100 ms" in info.value.details()


def test_a_class_name_differing_only_in_case_is_refused(start_daemon: Callable[..., Running], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from service.sample_files import write_sample_set

    samples = tmp_path / "samples"
    write_sample_set(samples, per_class=6, seed=0)
    d = start_daemon(make_config(tmp_path / "state"))
    red = ["--images", str(samples / "red" / "images"), "--audio", str(samples / "red" / "audio")]
    green = ["--images", str(samples / "green" / "images"), "--audio", str(samples / "green" / "audio")]
    assert main(["--target", d.target, "learn", "--quiet", "--class", "red", *red, "--class", "green", *green]) == 0
    capsys.readouterr()
    assert main(["--target", d.target, "learn", "--quiet", "--class", "Red", *red]) == 1
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and "['Red'] already exist" in err
    assert main(["--target", d.target, "learn", "--quiet", "--class", "Blue", *red, "--class", "blue", *green]) == 1
    assert "names ignore case" in capsys.readouterr().err


def _wav(seconds: float) -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(16000 * seconds)) / 16000
    soundfile.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, format="WAV",
                    subtype="PCM_16")
    return buf.getvalue()
