"""``python -m service serve`` (console script ``mcild``): run the continual-learning daemon.

    mcild --config /etc/mcil/mcild.yaml
    python -m service serve --listen 0.0.0.0:50051 --metrics-listen 0.0.0.0:9464 \\
        --state-dir /var/lib/mcil --preset lite --set gate.max_forgetting=5

Flags override the config file; ``--set section.field=value`` reaches any field (docs/service.md).
SIGTERM or SIGINT stops the daemon gracefully. Exit status: 0 after a clean stop, 2 for a
configuration error (the message names the field).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from service.errors import ConfigError, ServiceError

log = logging.getLogger("service")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcild", description="The continual-learning daemon.")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the daemon (the default)")
    check = sub.add_parser("check-config", help="validate the configuration and print it")
    for p in (serve, check):
        p.add_argument("--config", type=Path, help="YAML, JSON or TOML file (sections as in docs/service.md)")
        p.add_argument("--listen", metavar="HOST:PORT", help="gRPC address (server.listen)")
        p.add_argument("--metrics-listen", metavar="HOST:PORT",
                       help="Prometheus /metrics address, or 'none' (server.metrics_listen)")
        p.add_argument("--state-dir", metavar="DIR", help="versions, held-out examples, jobs (server.state_dir)")
        p.add_argument("--preset", metavar="NAME", help="backbone preset: lite, tiny, audioclip (server.preset)")
        p.add_argument("--device", metavar="DEVICE",
                       help="where the learner runs: auto, cpu, cuda or cuda:N (server.device)")
        p.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING, ERROR (server.log_level)")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                       help="set any configuration field; repeatable")
        p.add_argument("--light", action="store_const", const="true", default=None,
                       help="answer Classify from a process without PyTorch, learning in a child; the default "
                            "where the configuration allows it (server.light)")
        p.add_argument("--no-light", dest="light", action="store_const", const="false",
                       help="learn and serve in one process (server.light: false)")
    return parser


def config_from_args(args: argparse.Namespace) -> Any:
    from service.config_loader import load_config

    overrides: dict[str, Any] = {}
    for flag, key in (("listen", "server.listen"), ("metrics_listen", "server.metrics_listen"),
                      ("state_dir", "server.state_dir"), ("preset", "server.preset"),
                      ("device", "server.device"), ("log_level", "server.log_level"),
                      ("light", "server.light")):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(key or item, "--set needs SECTION.FIELD=VALUE")
        overrides[key.strip()] = value
    return load_config(args.config, overrides, os.environ)


def serve(config: Any) -> int:
    """Runs the daemon (light, its serving process: service/light.py; service/light_mode.py says when)
    until SIGTERM or SIGINT."""
    from service.light_mode import runs_light

    stop: Callable[[], None]
    light, why = runs_light(config.server)
    if light:
        log.info("light: Classify from a process without PyTorch, learning in a child (%s)", why)
        from service.light import LightServer

        server: Any = LightServer(config)
        port = server.start()
        stop = lambda: server.close(config.server.grace_seconds)  # noqa: E731
    else:
        from service.learner_child import TOKEN_ENV, end_with_parent
        from service.server import create_server

        if TOKEN_ENV in os.environ:  # set by a light daemon's serving process for its child
            log.info("the learner child of a light daemon: it learns, and answers what the serving process forwards")
        else:
            log.info("one process learns and serves (%s)", why)

        server, port = create_server(config)
        stop = server.stop
        end_with_parent()  # a learner of a serving process stops with it (service/learner_child.py)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("received %s", signal.Signals(signum).name)
            threading.Thread(target=stop, name="mcil-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"mcild listening on port {port}", flush=True)
    while not server.wait(timeout=1.0):
        pass
    return int(getattr(server, "exit_status", 0))  # the serving process: 2 when its learner could not start


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "serve")
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"mcild: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.server.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "check-config":
        import dataclasses
        import json

        from service.light_mode import runs_light

        try:
            light, why = runs_light(config.server)
        except ConfigError as exc:
            print(f"mcild: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(dataclasses.asdict(config), indent=2, default=str))
        print(f"light: {'yes' if light else 'no'} ({why})", file=sys.stderr)
        return 0
    try:
        return serve(config)
    except ConfigError as exc:
        print(f"mcild: {exc}", file=sys.stderr)
        return 2
    except ServiceError as exc:
        print(f"mcild: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
