"""Copies each worker's output to ours, one prefixed line at a time."""

from __future__ import annotations

import collections
import contextlib
import threading
from typing import IO, Callable, List, Optional


class WorkerOutput:
    """One worker's lines: copied (with `[worker N] ` if `prefix`) under the lock all workers
    share, each to `log_file` unprefixed, the last ones kept; `hide`'s lines reach only the log."""

    def __init__(self, index: int, lock: threading.Lock, *, log_file: Optional[IO[str]] = None,
                 prefix: bool = True, hide: Optional[Callable[[str], bool]] = None):
        self.index = index
        self.prefix = f"[worker {index}] " if prefix else ""
        self._lock = lock
        self._log_file = log_file
        self._hide = hide
        self._tail = collections.deque(maxlen=20)
        self._threads: List[threading.Thread] = []

    def follow(self, stream: IO[bytes], target: IO[str]) -> None:
        """Starts a thread that copies `stream` (a worker's pipe) to `target`."""
        thread = threading.Thread(target=self._pump, args=(stream, target), daemon=True,
                                  name=f"keras_dp-output-{self.index}")
        thread.start()
        self._threads.append(thread)

    def _pump(self, stream: IO[bytes], target: IO[str]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n") + "\n"
            shown = not (self._hide and self._hide(line))
            with self._lock:
                if shown:
                    self._tail.append(line.rstrip("\n"))
                    with contextlib.suppress(OSError, ValueError):  # ours closed: drain on
                        target.write(self.prefix + line)
                        target.flush()
                if self._log_file is not None:
                    self._log_file.write(line)
                    self._log_file.flush()
        stream.close()

    def join(self, timeout: float = 5.0) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def tail(self) -> List[str]:
        with self._lock:
            return list(self._tail)
