"""deploy/district/make-keys.sh writes keys Flower accepts: a SuperLink with its certificate, and a
SuperNode with a registered key of its own, connect (TLS and SuperNode authentication on)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from district.local import LocalDistrict
from district.room import RoomLink

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    shutil.which("flower-superlink") is None or shutil.which("ssh-keygen") is None
    or shutil.which("openssl") is None, reason="needs Flower (the test extra), openssl and ssh-keygen")


def test_the_keys_script_makes_a_district_that_connects(tmp_path: Path) -> None:
    keys = tmp_path / "secrets"
    subprocess.run(["bash", str(ROOT / "deploy/district/make-keys.sh"), str(keys), "127.0.0.1", "room-01"],
                   check=True, capture_output=True)
    assert (keys / "room-01").stat().st_mode & 0o077 == 0  # the private key is the room's alone
    district = LocalDistrict(tmp_path / "district")
    try:
        district.start_superlink(certificates=keys)
        private = district.register("room-01", keys / "room-01.pub")
        district.start_supernode(RoomLink("room-01", "127.0.0.1:1"), private)
        district.wait_active("room-01")
    finally:
        district.stop()
