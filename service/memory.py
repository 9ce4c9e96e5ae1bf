"""Handing freed memory back to the operating system after the served version changes.

Loading a version, compiling its graphs in a child process and answering large batches free
memory that glibc's allocator keeps for reuse; the daemon's resident size then stays at its peak
while it idles. ``malloc_trim(0)`` returns what is free at the top of every heap. It costs a few
milliseconds and is called after each swap of the served version (service/daemon.py). A no-op
where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> None:
    """Returns freed heap memory to the operating system (glibc ``malloc_trim``), if possible."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
