"""Noticing a worker stopped (SIGSTOP) rather than dead, from `/proc/PID/stat` (Linux only).

A worker stopped by a debugger (state `t`) is left alone; see docs/launch.md.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence


def is_stopped(pid: int) -> Optional[bool]:
    """Whether process `pid` is stopped by a signal (None: cannot tell)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # "pid (comm) state ...": comm may hold spaces and parentheses.
    return stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] == b"T"


def overdue(statuses: Sequence, since: Dict[int, float], now: float, grace: float) -> List:
    """The `WorkerStatus`es stopped for `grace` seconds, each once (it sets their `stopped`).

    `since` maps the pid of each worker seen stopped to when it was first seen so.
    """
    found = []
    for status in statuses:
        if not is_stopped(status.pid):
            since.pop(status.pid, None)
        elif now - since.setdefault(status.pid, now) >= grace and status.stopped is None:
            status.stopped = grace
            found.append(status)
    return found
