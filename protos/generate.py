"""Generate the Python gRPC stubs of ``protos/*.proto`` into ``service/_proto/``.

Run from anywhere after editing a ``.proto`` (needs the ``test`` extra: grpcio-tools)::

    python protos/generate.py

The generated files are committed, so users never need grpcio-tools. The proto directory is mapped
onto the package path ``service/_proto`` so the generated gRPC module imports its messages as
``from service._proto import mcil_pb2`` (no ``sys.path`` tricks at run time).
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE_PATH = "service/_proto"


def main() -> int:
    from grpc_tools import protoc  # imported here: only this script needs grpcio-tools

    well_known = str(resources.files("grpc_tools") / "_proto")
    out = ROOT / PACKAGE_PATH
    out.mkdir(parents=True, exist_ok=True)
    (out / "__init__.py").write_text('"""Generated gRPC stubs (python protos/generate.py). Do not edit."""\n')
    for proto in sorted(PROTOS.glob("*.proto")):
        args = [
            "grpc_tools.protoc",
            f"-I{PACKAGE_PATH}={PROTOS}",
            f"-I{well_known}",
            f"--python_out={ROOT}",
            f"--pyi_out={ROOT}",
            f"--grpc_python_out={ROOT}",
            f"{PACKAGE_PATH}/{proto.name}",
        ]
        code = protoc.main(args)
        if code != 0:
            print(f"protoc failed on {proto} (exit {code})", file=sys.stderr)
            return code
        print(f"generated stubs for {proto.relative_to(ROOT)} in {PACKAGE_PATH}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
