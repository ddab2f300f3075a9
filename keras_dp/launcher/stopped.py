"""Noticing a worker that is stopped (SIGSTOP) rather than dead (docs/launch.md).

Reads `/proc/PID/stat` (Linux; elsewhere nothing is noticed); a worker stopped by a
debugger (state `t`) is left alone.
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


class StoppedWorkers:
    """Tracks how long each running worker has been stopped (`grace`: seconds allowed)."""

    def __init__(self, grace: float):
        self.grace = grace
        self._since: Dict[int, float] = {}

    def overdue(self, statuses: Sequence, now: float) -> List:
        """The `WorkerStatus`es stopped for `grace` seconds, each once (its `stopped` set)."""
        found = []
        for status in statuses:
            if is_stopped(status.pid):
                since = self._since.setdefault(status.pid, now)
                if now - since >= self.grace and status.stopped is None:
                    status.stopped = self.grace
                    found.append(status)
            else:
                self._since.pop(status.pid, None)
        return found
