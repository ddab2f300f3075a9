"""Starts N workers on this machine and watches them (`keras-dp launch`; docs/launch.md)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Dict, List, Mapping, Optional, Sequence

from keras_dp.cluster import cluster_variables
from keras_dp.errors import ConfigError
from keras_dp.fault import (EXIT_PEER_FAILED, EXIT_PREEMPTED, EXIT_USAGE, PEER_LINE,
                            describe_exit)
from keras_dp.launcher import quiet as quiet_lib
from keras_dp.launcher.output import WorkerOutput
from keras_dp.launcher.ports import pick_ports
from keras_dp.launcher.stopped import overdue

#: Seconds the workers get to save and exit after a forwarded SIGTERM/SIGINT.
SIGNAL_GRACE = 120.0


@dataclasses.dataclass
class WorkerStatus:
    """How one worker of one attempt ended.

    Attributes:
        index: Worker index (0 is the chief).
        address: Its `host:port` in TF_CONFIG.
        pid: Process id.
        returncode: Exit status (negative: killed by that signal).
        ended: Seconds after the attempt started when it ended.
        killed_by_launcher: The launcher stopped it (after another failed).
        stopped: Seconds it had been stopped (SIGSTOP) when the launcher killed it.
        tail: Its last output lines.
    """

    index: int
    address: str
    pid: int
    returncode: Optional[int] = None
    ended: Optional[float] = None
    killed_by_launcher: bool = False
    stopped: Optional[float] = None
    tail: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class LaunchResult:
    """The outcome of `Launcher.run()`.

    Attributes:
        returncode: 0 when every worker succeeded; otherwise the first failed worker's exit
            code (128 + signal number for a signal), or `EXIT_PREEMPTED` after a preemption.
        attempts: How many times the workers were started.
        workers: The statuses of the last attempt's workers.
        failed: Index of the worker that failed first in the last attempt, if any.
        summary: The failure summary that was printed ("" on success).
    """

    returncode: int
    attempts: int
    workers: List[WorkerStatus]
    failed: Optional[int] = None
    summary: str = ""


def worker_command(command: Sequence[str]) -> List[str]:
    """The argv to run: a `script.py` runs under this Python, anything else as given."""
    command = list(command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ConfigError("no command to run", variable="command",
                          fix="write e.g. keras-dp launch -n 2 train.py, or "
                              "keras-dp launch -n 2 -- python -m mypackage.train")
    return [sys.executable, "-u", *command] if command[0].endswith(".py") else command


def worker_environments(num_workers: int, ports: Sequence[int], *, host: str = "127.0.0.1",
                        base: Optional[Mapping[str, str]] = None, attempt: int = 0,
                        cpu_replicas: Optional[int] = None) -> List[Dict[str, str]]:
    """The environment of each worker: TF_CONFIG for its index, plus launcher hints."""
    base = dict(os.environ if base is None else base)
    for name in cluster_variables():  # they would describe another cluster
        base.pop(name, None)
    addresses = [f"{host}:{port}" for port in ports]
    envs = []
    for index in range(num_workers):
        env = dict(base)
        if num_workers > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses},
                                           "task": {"type": "worker", "index": index}})
        env["KERAS_DP_RESTART_COUNT"] = str(attempt)
        env.setdefault("PYTHONUNBUFFERED", "1")
        if cpu_replicas is not None:
            env["KERAS_DP_CPU_REPLICAS"] = str(cpu_replicas)
        envs.append(env)
    return envs


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # it has just ended
        os.killpg(pid, signum)


def _check_whole(name: str, value, minimum: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"must be a whole number >= {minimum}", variable=name,
                          received=value, fix=fix)


class Launcher:
    """Runs one command as N workers on this machine (docs/launch.md).

    Args:
        command: The argv (`script.py ...` runs under this Python).
        num_workers, max_restarts, cpu_replicas, port_base, host, log_dir, stop_grace: As
            `keras-dp launch -n`, `--max-restarts`, ... `--stop-grace` (docs/launch.md).
        env: Base environment (default: ours).
        prefix: Prefix every output line with `[worker N] ` (`--no-prefix`: False).
        quiet: Hide TensorFlow's start-up notices in the workers' output (default: when
            `env` does not set `TF_CPP_MIN_LOG_LEVEL`; see `keras_dp.launcher.quiet`).
        stdout, stderr: Where worker output and launcher messages go (default: ours).
    """

    def __init__(self, command: Sequence[str], num_workers: int, *, max_restarts: int = 0,
                 cpu_replicas: Optional[int] = None, port_base: Optional[int] = None,
                 host: str = "127.0.0.1", log_dir: Optional[str] = None,
                 env: Optional[Mapping[str, str]] = None, stop_grace: float = 10.0,
                 prefix: bool = True, quiet: Optional[bool] = None,
                 stdout: Optional[IO[str]] = None, stderr: Optional[IO[str]] = None):
        _check_whole("num_workers", num_workers, 1, "pass e.g. -n 2")
        _check_whole("max_restarts", max_restarts, 0, "pass e.g. --max-restarts 3")
        if cpu_replicas is not None:
            _check_whole("cpu_replicas", cpu_replicas, 1, "pass e.g. --cpu-replicas 2")
        if cpu_replicas is not None and cpu_replicas > 1 and num_workers > 1:
            raise ConfigError(
                f"cannot give each of {num_workers} workers {cpu_replicas} CPU replicas: "
                "MultiWorkerMirroredStrategy uses one CPU device per worker",
                variable="cpu_replicas", received=cpu_replicas,
                fix=f"launch -n {num_workers * cpu_replicas} workers with one replica each, "
                    f"or -n 1 --cpu-replicas {cpu_replicas} for one process with "
                    f"{cpu_replicas} replicas (MirroredStrategy)")
        self.command = worker_command(command)
        self.num_workers = num_workers
        self.max_restarts = max_restarts
        self.cpu_replicas = cpu_replicas
        self.port_base = port_base
        self.host = host
        self.log_dir = log_dir
        self.env = env
        self.stop_grace = stop_grace
        self.prefix = prefix
        self.quiet = quiet_lib.wanted(env) if quiet is None else quiet
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self._signal: Optional[int] = None
        self._procs: List[subprocess.Popen] = []
        self._lock = threading.Lock()

    def _say(self, text: str) -> None:
        with self._lock:
            for line in text.rstrip("\n").splitlines():
                self.stderr.write(f"[launcher] {line}\n")
            self.stderr.flush()

    def _on_signal(self, signum, frame):  # noqa: ARG002
        self._forward(signum if self._signal is None else signal.SIGKILL)  # a second one kills
        self._signal = signum

    def _forward(self, signum: int) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                _signal_group(proc.pid, signum)

    def run(self) -> LaunchResult:
        """Starts the workers (again, up to `max_restarts` times); returns the outcome."""
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                handlers[signum] = signal.signal(signum, self._on_signal)
        try:
            attempt = 0
            while True:
                result = self._attempt(attempt)
                result.attempts = attempt + 1
                if result.returncode == 0 or self._signal is not None or \
                        attempt >= self.max_restarts:
                    return result
                if result.returncode == EXIT_USAGE:
                    self._say("not restarting: a usage or configuration error does not go "
                              "away by itself")
                    return result
                attempt += 1
                self._say(f"restarting all {self.num_workers} workers on new ports "
                          f"(restart {attempt} of {self.max_restarts})")
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)

    def _open_log(self, index: int, attempt: int):
        if not self.log_dir:
            return None
        os.makedirs(self.log_dir, exist_ok=True)
        handle = open(os.path.join(self.log_dir, f"worker-{index}.log"),
                      "a" if attempt else "w", encoding="utf-8")
        if attempt:
            handle.write(f"\n===== keras-dp launch: restart {attempt} =====\n")
        return handle

    def _attempt(self, attempt: int) -> LaunchResult:
        ports = pick_ports(self.num_workers, host=self.host, port_base=self.port_base,
                           attempt=attempt)
        envs = worker_environments(self.num_workers, ports, host=self.host, base=self.env,
                                   attempt=attempt, cpu_replicas=self.cpu_replicas)
        for worker_env in envs if self.quiet else ():
            worker_env.setdefault(quiet_lib.LEVEL_VARIABLE, quiet_lib.DEFAULT_LEVEL)
        statuses, outputs, logs, self._procs = [], [], [], []
        started = time.monotonic()
        if attempt == 0:
            self._say(f"starting {self.num_workers} worker(s) on {self.host}: "
                      f"{' '.join(self.command)}")
        for index in range(self.num_workers):
            proc = subprocess.Popen(self.command, env=envs[index], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            self._procs.append(proc)
            logs.append(self._open_log(index, attempt))
            output = WorkerOutput(index, self._lock, log_file=logs[-1], prefix=self.prefix,
                                  hide=quiet_lib.is_notice if self.quiet else None)
            output.follow(proc.stdout, self.stdout)
            output.follow(proc.stderr, self.stderr)
            outputs.append(output)
            statuses.append(WorkerStatus(index, f"{self.host}:{ports[index]}", proc.pid))
            self._say(f"worker {index} started: {self.host}:{ports[index]}, pid {proc.pid}")
        if self._signal is not None:  # a signal came while starting
            self._forward(self._signal)
        stopped_since: Dict[int, float] = {}
        kill_at: Optional[float] = None
        signalled = None   # set (with the kill deadline) below, for a signal during start-up too
        while True:
            now = time.monotonic()
            for status, proc in zip(statuses, self._procs):
                if status.returncode is None and proc.poll() is not None:
                    status.returncode, status.ended = proc.returncode, now - started
                    self._say(f"worker {status.index} ended after {status.ended:.1f} s: "
                              f"{describe_exit(status.returncode)}")
            running = [s for s in statuses if s.returncode is None]
            if not running:
                break
            for status in overdue(running, stopped_since, now, self.stop_grace):  # peers wait
                self._say(f"worker {status.index} has been stopped (SIGSTOP) for "
                          f"{self.stop_grace:g} s and holds up every other worker: killing it")
                _signal_group(status.pid, signal.SIGKILL)
            if self._signal is not None and signalled is None:
                signalled = self._signal
                kill_at = now + SIGNAL_GRACE
            elif kill_at is None and any(s.returncode for s in statuses):  # one failed
                kill_at = now + self.stop_grace
                self._say(f"the other workers get {self.stop_grace:g} s to stop by themselves")
            if kill_at is not None and now >= kill_at:
                for status in running:
                    status.killed_by_launcher = True
                    _signal_group(status.pid, signal.SIGKILL)
                kill_at = now + 3600
            time.sleep(0.05)
        for output, status, log_file in zip(outputs, statuses, logs):
            output.join()
            status.tail = output.tail()
            if log_file is not None:
                log_file.close()
        return self._outcome(statuses, signalled)

    def _outcome(self, statuses: List[WorkerStatus], signalled: Optional[int]) -> LaunchResult:
        # In the order they ended (the same poll: by index).
        failed = sorted((s for s in statuses if s.returncode), key=lambda s: s.ended)
        if not failed:
            return LaunchResult(0, 0, statuses)
        first = ([s for s in failed if not s.killed_by_launcher] or failed)[0]
        if {s.returncode for s in statuses} == {EXIT_PREEMPTED}:
            summary = (f"all {len(statuses)} workers saved a backup and stopped (preempted, "
                       f"{describe_exit(EXIT_PREEMPTED)})")
            self._say(summary)
            return LaunchResult(EXIT_PREEMPTED, 0, statuses, first.index, summary)
        code = 128 - first.returncode if first.returncode < 0 else first.returncode
        if signalled == signal.SIGINT:
            code = 128 + signal.SIGINT
        lines = [f"worker {first.index} ({first.address}, pid {first.pid}) failed first: "
                 f"{describe_exit(first.returncode)}"]
        if first.returncode == EXIT_PEER_FAILED:
            blamed = next(filter(None, map(PEER_LINE.search, reversed(first.tail))), None)
            if blamed:
                lines[0] += f"; it reports that worker {blamed.group(2)} failed"
        if first.stopped is not None:
            lines[0] += f", after it had been stopped (SIGSTOP) for {first.stopped:g} s"
        lines.append(f"last lines of worker {first.index}:")
        lines.extend("    " + line for line in first.tail[-12:])
        for status in (s for s in statuses if s is not first):
            how = describe_exit(status.returncode)
            if status.stopped is not None:
                how += f", after it had been stopped (SIGSTOP) for {status.stopped:g} s"
            elif status.killed_by_launcher:
                how += ", stopped by the launcher"
            lines.append(f"worker {status.index} ({status.address}): {how}")
        lines.append(f"exit code {code}")
        summary = "\n".join(lines)
        self._say(summary)
        return LaunchResult(code, 0, statuses, first.index, summary)
