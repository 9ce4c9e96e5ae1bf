"""A whole district on one machine, on Flower's deployment engine: for trying it, the tests and the benchmark.

    district = LocalDistrict(Path("/tmp/district"))
    district.start({"room-1": RoomLink("room-1", "127.0.0.1:50051"), ...})   # SuperLink + a SuperNode per room
    result = district.round(identity)          # `mcil district round` against it
    district.stop()

It does what docs/district.md tells a district's operator to do, with the same commands: a throwaway
CA and a certificate for 127.0.0.1 (TLS on every Flower connection), one ECDSA key per SuperNode,
registered with the SuperLink (``flwr supernode register``) before the SuperNode starts (SuperNode
authentication on), one SuperLink (``--isolation subprocess``, runtime dependency installation off)
and one SuperNode per room, with Flower's telemetry and update check off. Everything lives under
its directory (``FLWR_HOME`` too); nothing is written to ``~/.flwr``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from district.cli import APP, OFFLINE, flwr_round
from district.room import RoomLink

STARTUP_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_certificates(directory: Path) -> None:
    """``ca.crt`` and ``server.crt``/``server.key`` for 127.0.0.1 and localhost (two days)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mcil district CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA384()))
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA384()))
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))


def make_node_key(directory: Path, name: str) -> tuple[Path, Path]:
    """An ECDSA P-384 key pair in OpenSSH format (what ``ssh-keygen -t ecdsa -b 384`` writes)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = directory / name, directory / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH) + f" {name}\n".encode())
    return private, public


def node_config(link: RoomLink) -> str:
    """``--node-config``'s value for a room."""
    values: dict[str, Any] = {"room": link.room, "daemon": link.daemon, "install-timeout": link.install_timeout}
    if link.token_file:
        values["token-file"] = str(link.token_file)
    if link.daemon_ca:
        values["daemon-ca"] = str(link.daemon_ca)
    return " ".join(f"{k}={json.dumps(v)}" for k, v in values.items())


class LocalDistrict:
    """See the module docstring."""

    CONNECTION = "district"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.certs = self.directory / "certs"
        self.keys = self.directory / "keys"
        self.logs = self.directory / "logs"
        self.home = self.directory / "flwr_home"
        for d in (self.logs, self.home):
            d.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.superlink: subprocess.Popen[bytes] | None = None
        self.supernodes: dict[str, subprocess.Popen[bytes]] = {}
        self.node_ports: dict[str, int] = {}
        self.env = {**os.environ, **OFFLINE, "FLWR_HOME": str(self.home), "NO_COLOR": "1"}

    # -- processes ---------------------------------------------------------------------------------------
    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child holds it
        try:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                    start_new_session=True)
        finally:
            log.close()

    def start_superlink(self, certificates: Path | None = None) -> None:
        """Starts the SuperLink with ``certificates`` (a folder with ``ca.crt``, ``server.crt`` and
        ``server.key``, as deploy/district/make-keys.sh writes) or throwaway ones."""
        if certificates is None:
            make_certificates(self.certs)
        else:
            self.certs = Path(certificates).resolve()
        self.port = free_port()
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{self.CONNECTION}"\n\n[superlink.{self.CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\nroot-certificates = "{self.certs / "ca.crt"}"\n')
        self.superlink = self._spawn("superlink", [
            "flower-superlink", "--ssl-ca-certfile", str(self.certs / "ca.crt"),
            "--ssl-certfile", str(self.certs / "server.crt"), "--ssl-keyfile", str(self.certs / "server.key"),
            "--enable-supernode-auth", "--disable-runtime-dependency-installation", "--isolation", "subprocess",
            "--database", str(self.directory / "superlink.db"), "--host", "127.0.0.1", "--port", str(self.port)])
        context = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if self.superlink.poll() is not None:
                raise RuntimeError(f"the SuperLink exited ({self.superlink.returncode}): {self.log('superlink')}")
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{self.port}/health", context=context, timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the SuperLink did not start: {self.log('superlink')}") from None
                time.sleep(0.2)

    def register(self, name: str, public: Path | None = None) -> Path:
        """Registers SuperNode ``name``'s public key (``public``, or a new key pair's) with the SuperLink;
        returns the private key's path (beside ``public``)."""
        if public is None:
            private, public = make_node_key(self.keys, name)
        else:
            private = public.with_suffix("")
        done = subprocess.run(["flwr", "supernode", "register", str(public), self.CONNECTION, "--format", "json"],
                              env=self.env, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0 or '"success": true' not in done.stdout.replace('":true', '": true'):
            raise RuntimeError(f"cannot register {name}'s key: {done.stdout}{done.stderr}")
        return private

    def start_supernode(self, link: RoomLink, key: Path) -> subprocess.Popen[bytes]:
        port = free_port()
        process = self._spawn(f"supernode-{link.room}", [
            "flower-supernode", "--superlink", f"127.0.0.1:{self.port}", "--root-certificates",
            str(self.certs / "ca.crt"), "--auth-supernode-private-key", str(key),
            "--node-config", node_config(link), "--host", "127.0.0.1", "--port", str(port)])
        self.supernodes[link.room] = process
        self.node_ports[link.room] = port
        return process

    def wait_active(self, room: str, timeout: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while "SuperNode ID" not in self.log(f"supernode-{room}"):
            process = self.supernodes[room]
            if process.poll() is not None:
                raise RuntimeError(f"SuperNode {room} exited ({process.returncode}): {self.log(f'supernode-{room}')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"SuperNode {room} did not connect: {self.log(f'supernode-{room}')}")
            time.sleep(0.2)

    def start(self, rooms: dict[str, RoomLink]) -> None:
        """A SuperLink, and a registered SuperNode per room, connected (keys registered side by side:
        each ``flwr`` call takes about a second to start)."""
        from concurrent.futures import ThreadPoolExecutor

        try:
            self.start_superlink()
            with ThreadPoolExecutor(max_workers=4) as pool:
                keys = dict(zip(rooms, pool.map(self.register, rooms)))
            for room, link in rooms.items():
                self.start_supernode(link, keys[room])
            for room in rooms:
                self.wait_active(room)
        except BaseException:
            self.stop()  # nothing is left running when a district cannot start
            raise

    def kill(self, room: str) -> None:
        """SIGKILL a room's SuperNode and what it started (a room lost mid-round)."""
        process = self.supernodes.pop(room)
        port = self.node_ports.pop(room)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it had exited already
        process.wait()
        self._sweep({port}, signal.SIGKILL)

    def stop(self) -> None:
        processes = [*self.supernodes.values(), *([self.superlink] if self.superlink else [])]
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        ports = {*self.node_ports.values(), self.port}
        self._sweep(ports, signal.SIGTERM)
        time.sleep(0.5)
        self._sweep(ports, signal.SIGKILL)
        self.supernodes.clear()
        self.node_ports.clear()
        self.superlink = None

    @staticmethod
    def _sweep(ports: set[int], sig: signal.Signals) -> None:
        """Signals what Flower started for these ports and left behind: SuperExec and app processes
        start in sessions of their own and outlive a SuperNode killed under them."""
        marks = tuple(f"127.0.0.1:{p}" for p in ports)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if ("flower-" in command or "flwr-" in command) and any(m in command for m in marks):
                try:
                    os.kill(int(entry.name), sig)
                except (ProcessLookupError, PermissionError):
                    pass

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    # -- rounds ------------------------------------------------------------------------------------------
    def round(self, identity: str, *, rooms: int = 1, timeout: float = 120.0, wait: float = 30.0,
              state_dir: Path | None = None) -> dict[str, Any]:
        """One round (``flwr run`` of the district's app, as ``mcil district round`` runs it): its result."""
        from district.round import RoundConfig

        config = RoundConfig(identity, state_dir or self.directory / "ledger",
                             self.directory / "results" / f"round-{time.time_ns()}.json", rooms, wait, timeout)
        return flwr_round(APP, self.CONNECTION, config, self.env, timeout=wait + 3 * timeout + 120)


__all__ = ["LocalDistrict", "free_port", "make_certificates", "make_node_key", "node_config"]
