"""Named places where the daemon can be made to die on purpose, to prove that recovery holds there.

``MCIL_FAILPOINTS=commit.after_rename`` (comma-separated names) makes the daemon kill itself with
SIGKILL, exactly as ``kill -9`` would, when it reaches that point. The chaos campaign
(``python -m service.chaos``) uses it to land kills inside windows too narrow to hit by timing, such
as between a version's rename and the move of ``current``. Unset (always, in production), a failpoint
is one set lookup. The points:

    commit.after_rename     the version directory has its final name; ``current`` not moved yet
    commit.after_current    ``current`` moved; the job record still says running
    prune.after_remove      one old version deleted by retention, others may follow
"""

from __future__ import annotations

import os
import signal

ENV = "MCIL_FAILPOINTS"
POINTS = ("commit.after_rename", "commit.after_current", "prune.after_remove")
_armed = frozenset(name.strip() for name in os.environ.get(ENV, "").split(",") if name.strip())


def failpoint(name: str) -> None:
    """Die here (SIGKILL to this process) if ``name`` is armed in ``MCIL_FAILPOINTS``."""
    if name in _armed:
        os.kill(os.getpid(), signal.SIGKILL)
