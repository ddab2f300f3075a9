"""Runs test worker scripts as real processes on 127.0.0.1 (free ports from portpicker)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import portpicker

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS_DIR)


@dataclasses.dataclass
class WorkerResult:
    index: int
    returncode: Optional[int]
    output: str
    seconds: float

    def check(self):
        assert self.returncode == 0, f"worker {self.index} exited {self.returncode}:\n{self.output[-6000:]}"


def base_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    from keras_dp.cluster import cluster_variables

    dropped = set(cluster_variables())  # and every other KERAS_DP_ setting
    env = {k: v for k, v in os.environ.items()
           if k not in dropped and not k.startswith("KERAS_DP_")}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, TESTS_DIR, env.get("PYTHONPATH", "")])
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def free_ports(count: int) -> List[int]:
    return [portpicker.pick_unused_port() for _ in range(count)]


def run_workers(script: str, num_workers: int, args: Sequence[str] = (),
                env: Optional[Dict[str, str]] = None, timeout: float = 240,
                per_worker_env: Optional[List[Dict[str, str]]] = None) -> List[WorkerResult]:
    """Starts `num_workers` copies of tests/workers/<script> with KERAS_DP_WORKERS set.

    Returns when all have exited, or kills them all after `timeout` seconds.
    """
    ports = free_ports(num_workers)
    workers = ",".join(f"127.0.0.1:{p}" for p in ports)
    path = os.path.join(TESTS_DIR, "workers", script)
    procs, logs, started = [], [], time.time()
    for index in range(num_workers):
        worker_env = base_env(env)
        worker_env.update({"KERAS_DP_WORKERS": workers, "KERAS_DP_TASK_INDEX": str(index)})
        if per_worker_env:
            worker_env.update(per_worker_env[index])
        log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                f"keras_dp_test_{os.getpid()}_{ports[0]}_{index}.log"), "w+")
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, path, *args], env=worker_env,
                                      stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
    ended = [None] * num_workers
    deadline = started + timeout
    while any(p.poll() is None for p in procs) and time.time() < deadline:
        for i, p in enumerate(procs):
            if p.poll() is not None and ended[i] is None:
                ended[i] = time.time() - started
        time.sleep(0.1)
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    results = []
    for i, (p, log) in enumerate(zip(procs, logs)):
        log.seek(0)
        output = log.read()
        log.close()
        os.unlink(log.name)
        results.append(WorkerResult(i, p.returncode, output,
                                    ended[i] if ended[i] is not None else time.time() - started))
    return results


def run_python(code_or_script: Sequence[str], env: Optional[Dict[str, str]] = None,
               timeout: float = 180) -> subprocess.CompletedProcess:
    """Runs `python ARGS...` with the test environment; returns the completed process."""
    return subprocess.run([sys.executable, *code_or_script], env=base_env(env),
                          capture_output=True, text=True, timeout=timeout)
