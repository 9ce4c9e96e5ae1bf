"""``mcil district``: a room's district identity, and one district round through Flower.

    mcil district identity                       # this room's identity, classes and statistics size
    mcil district round --superlink district --identity HEX --state-dir /var/lib/mcil-district \\
                        --rooms 40 [--timeout 120] [--result round.json]

``round`` runs the district's Flower App (``district/app``) with ``flwr run`` against the
SuperLink connection named ``--superlink`` in ``$FLWR_HOME/config.toml`` (docs/district.md), waits
for it, and prints the round's result: rooms, the classes each contributed, bytes each way, the
time, and each room's install. Flower's telemetry and update check are turned off for the call.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from district.round import RoundConfig

APP = Path(__file__).resolve().parent / "app"
"""The district's Flower App: a folder holding only its pyproject.toml, which names this package's
ServerApp and ClientApp (the code itself is installed with mcil-daemon on every host)."""
OFFLINE = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
"""Flower's telemetry and update check, off: edge sites are offline, and nothing leaves them unasked."""


def add_commands(command: Callable[[str, str], argparse.ArgumentParser],
                 connect: Callable[[argparse.Namespace], Any]) -> None:
    """Adds ``district identity`` and ``district round`` to the ``mcil`` parser."""
    p = command("district", "share what this room learned with a district of rooms (docs/district.md)")
    sub = p.add_subparsers(dest="district_command", required=True)
    q = sub.add_parser("identity", help="this room's district identity, classes and statistics size",
                       allow_abbrev=False)
    q.set_defaults(run=lambda args: cmd_identity(connect(args)))
    q = sub.add_parser("round", help="run one district round through Flower and show its result",
                       allow_abbrev=False)
    q.add_argument("--superlink", required=True, help="the SuperLink connection's name in $FLWR_HOME/config.toml")
    q.add_argument("--identity", required=True, help="the district identity (`mcil district identity`)")
    q.add_argument("--state-dir", required=True, help="where the district keeps every room's latest contribution")
    q.add_argument("--rooms", type=int, default=1, help="wait until this many rooms are connected (default 1)")
    q.add_argument("--wait", type=float, default=30.0, help="... or this many seconds (default 30)")
    q.add_argument("--timeout", type=float, default=120.0, help="seconds each phase waits for rooms (default 120)")
    q.add_argument("--result", help="keep the round's result here (JSON)")
    q.add_argument("--app", default=str(APP), help="the district's Flower App directory")
    q.set_defaults(run=cmd_round)


def cmd_identity(client: Any) -> int:
    header, data = client.room_statistics()
    print(f"identity  {header.identity}")
    print(f"classes   {', '.join(header.class_names) or '(none taught here yet)'}")
    print(f"shares    {len(data):,} bytes of statistics per round (when they changed)")
    return 0


class RoundFailed(RuntimeError):
    """``flwr run`` ended without the round's result (the ServerApp failed or never ran)."""


def flwr_round(app: str | Path, connection: str, config: "RoundConfig", env: dict[str, str] | None = None,
               timeout: float | None = None) -> dict[str, Any]:
    """Runs the district's app once with ``flwr run`` and returns the round's result. ``flwr run
    --stream`` exits 0 even when the ServerApp fails, so the result file is what tells."""
    if config.result_path.exists():
        config.result_path.unlink()
    run_config = " ".join(f"{k}={json.dumps(v)}" for k, v in config.run_config().items())
    done = subprocess.run(["flwr", "run", str(app), connection, "--stream", "--run-config", run_config],
                          env={**(env or os.environ), **OFFLINE}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False, timeout=timeout)
    if not config.result_path.exists():
        raise RoundFailed(f"the round wrote no result (flwr run exited {done.returncode}):\n{done.stdout[-4000:]}")
    out: dict[str, Any] = json.loads(config.result_path.read_text())
    return out


def cmd_round(args: argparse.Namespace) -> int:
    if shutil.which("flwr") is None:
        print("mcil: Flower's `flwr` command is not installed: pip install 'mcil-daemon[district]'", file=sys.stderr)
        return 2
    if not (Path(args.app) / "pyproject.toml").is_file():
        print(f"mcil: --app {args.app}: not a Flower App folder (no pyproject.toml)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mcil-district-") as tmp:
        from district.round import RoundConfig

        config = RoundConfig(args.identity, Path(args.state_dir).resolve(),
                             Path(args.result).resolve() if args.result else Path(tmp) / "round.json",
                             args.rooms, args.wait, args.timeout)
        try:
            print_round(flwr_round(args.app, args.superlink, config))
        except RoundFailed as exc:
            print(f"mcil: {exc}", file=sys.stderr)
            return 1
    return 0


def print_round(result: dict[str, Any]) -> None:
    print(f"round {result['round']}: {len(result['rooms'])} room(s) answered in {result['seconds']:.1f} s "
          f"(share {result['share_seconds']:.1f} s, install {result['install_seconds']:.1f} s)")
    for room, r in sorted(result["rooms"].items()):
        install = r.get("install", {})
        sent = "unchanged" if r.get("unchanged") else f"{r.get('bytes_sent', 0):,} B"
        gained = ", ".join(install.get("classes_gained", [])) or "-"
        state = str(install.get("state", "?")).removeprefix("JOB_STATE_").lower()
        print(f"  {room:<16} taught {', '.join(r['classes']) or '-'}; sent {sent}, "
              f"received {r.get('bytes_received', 0):,} B; {state}"
              f"{' v' + str(install['version']) if install.get('version') else ''}; gained {gained}"
              f"{'  (' + install['message'] + ')' if install.get('message') else ''}")
    for room, why in sorted(result.get("refused", {}).items()):
        print(f"  {room:<16} REFUSED: {why}")
    for room, why in sorted(result.get("errors", {}).items()):
        print(f"  {room:<16} ERROR: {why}")
    for room in result.get("silent", []):
        print(f"  {room:<16} no answer (its latest earlier contribution was merged)")


__all__ = ["APP", "OFFLINE", "RoundFailed", "add_commands", "cmd_identity", "cmd_round", "flwr_round", "print_round"]
