"""Runs `keras-dp launch` in a subprocess and watches its output line by line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import List, Optional, Tuple

from _multiproc import TESTS_DIR, base_env

RESUME_WORKER = os.path.join(TESTS_DIR, "workers", "resume_worker.py")


class LaunchRun:
    """A `python -m keras_dp launch ...` process whose lines are timestamped as they arrive."""

    def __init__(self, args, *, cwd: Optional[str] = None, env=None):
        self.started = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "keras_dp", "launch", *args], cwd=cwd, env=base_env(env),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            start_new_session=True)
        self.lines: List[Tuple[float, str]] = []
        self.ended: Optional[float] = None
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append((time.time(), line.rstrip("\n")))

    def wait_for(self, pattern: str, timeout: float = 120) -> Tuple[float, "re.Match"]:
        """Waits for a line matching `pattern`; returns (arrival time, match)."""
        regex = re.compile(pattern)
        deadline = time.time() + timeout
        seen = 0
        while time.time() < deadline:
            with self._lock:
                lines = self.lines[seen:]
            for when, line in lines:
                match = regex.search(line)
                if match:
                    return when, match
            seen += len(lines)
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n"
                             + self.text()[-6000:])

    def pid(self, worker: int) -> int:
        _, match = self.wait_for(rf"\[launcher\] worker {worker} started: \S+, pid (\d+)")
        return int(match.group(1))

    def signal_worker(self, worker: int, signum: int) -> float:
        """Sends `signum` to a worker process; returns when."""
        os.kill(self.pid(worker), signum)
        return time.time()

    def finish(self, timeout: float = 240) -> int:
        """Waits for the launcher to exit (kills it after `timeout`); returns its exit code."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"keras-dp launch still running after {timeout} s:\n"
                                 + self.text()[-6000:])
        finally:
            self.ended = time.time()
            self._reader.join(10)
        return self.proc.returncode

    def text(self) -> str:
        with self._lock:
            return "\n".join(line for _, line in self.lines)

    def when(self, pattern: str) -> float:
        """Arrival time of the first line matching `pattern` (already printed)."""
        regex = re.compile(pattern)
        with self._lock:
            for when, line in self.lines:
                if regex.search(line):
                    return when
        raise AssertionError(f"no line matching {pattern!r}:\n{self.text()[-6000:]}")

    def last_step_time(self, worker: int) -> float:
        """The time the worker printed after its last training step."""
        times = [float(m.group(1)) for _, line in self.lines
                 for m in [re.search(rf"^\[worker {worker}\] STEP \d+ ([\d.]+)", line)] if m]
        assert times, self.text()[-3000:]
        return times[-1]
