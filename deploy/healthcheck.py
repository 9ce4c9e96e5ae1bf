"""Ask a running daemon whether it serves, through the standard gRPC health protocol.

    python deploy/healthcheck.py                          # 127.0.0.1:50051, plain text
    python deploy/healthcheck.py --target host:50051 --ca ca.pem [--cert c.pem --key k.pem]

Exit status 0 when the ``mcil.v1.ContinualLearner`` service answers SERVING, 1 otherwise (not
serving, stopping, unreachable, or a timeout), which is what a container HEALTHCHECK, a systemd
watchdog script or a load balancer probe needs. Health checks need no bearer token. The container
image runs this file as its HEALTHCHECK (deploy/docker/Dockerfile).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

SERVICE = "mcil.v1.ContinualLearner"


def check(target: str, service: str = SERVICE, timeout: float = 3.0, ca: Path | None = None,
          cert: Path | None = None, key: Path | None = None, server_name: str | None = None) -> str:
    """The health status name (``SERVING``, ``NOT_SERVING``, ...) or ``UNREACHABLE: <why>``."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    options: list[tuple[str, str]] = []
    if ca is not None:
        creds = grpc.ssl_channel_credentials(
            ca.read_bytes(), key.read_bytes() if key else None, cert.read_bytes() if cert else None)
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        channel = grpc.secure_channel(target, creds, options=options)
    else:
        channel = grpc.insecure_channel(target)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        return f"UNREACHABLE: {getattr(code, 'name', code)}"
    finally:
        channel.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default=os.environ.get("MCIL_HEALTH_TARGET", "127.0.0.1:50051"),
                        help="HOST:PORT of the daemon's gRPC port (env MCIL_HEALTH_TARGET; default %(default)s)")
    parser.add_argument("--service", default=SERVICE, help="service name to ask about ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default %(default)s)")
    parser.add_argument("--ca", type=Path, help="CA certificate (PEM) when the daemon uses TLS")
    parser.add_argument("--cert", type=Path, help="client certificate (PEM) for mutual TLS")
    parser.add_argument("--key", type=Path, help="client private key (PEM) for mutual TLS")
    parser.add_argument("--server-name", help="name to check the server certificate against")
    args = parser.parse_args(argv)
    status = check(args.target, args.service, args.timeout, args.ca, args.cert, args.key, args.server_name)
    print(f"{args.target} {args.service or '(server)'}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    raise SystemExit(main())
