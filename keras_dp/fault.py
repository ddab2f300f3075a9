"""Exit codes and failure handling for multi-worker runs; see docs/fault_tolerance.md."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sys
import threading
import time
from typing import Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from keras_dp.errors import KerasDPError, StrategyError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PREEMPTED = 75
EXIT_PEER_FAILED = 76
EXIT_STARTUP_FAILED = 77

#: What each keras_dp exit code means (for launchers and summaries).
EXIT_CODES = {
    EXIT_OK: "finished",
    EXIT_FAILURE: "failed",
    EXIT_USAGE: "usage or configuration error",
    EXIT_PREEMPTED: "preempted: a backup was saved, relaunch to resume",
    EXIT_PEER_FAILED: "stopped because another worker failed",
    EXIT_STARTUP_FAILED: "start-up failed: not every worker joined",
}

#: The line a stopping worker prints; launchers read the peer from it.
PEER_LINE = re.compile(r"keras_dp: worker (\d+)\S* stops because worker (\d+)")


def describe_exit(returncode: Optional[int]) -> str:
    """A short phrase for a `Popen.returncode`, e.g. `"killed by SIGKILL"`, `"still running"`."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    meaning = EXIT_CODES.get(returncode)
    if returncode > 128 and meaning is None:
        with contextlib.suppress(ValueError):
            meaning = f"probably {signal.Signals(returncode - 128).name}"
    return f"exit code {returncode}" + (f" ({meaning})" if meaning else "")


def worker_position(strategy) -> Tuple[int, int, bool]:
    """This process's `(worker index, number of workers, is chief)`; `(0, 1, True)` alone."""
    extended = getattr(strategy, "extended", None)
    count = int(getattr(extended, "_num_workers", 1) or 1)
    if count <= 1:
        return 0, 1, True
    resolver = strategy.cluster_resolver
    from tensorflow.python.distribute import multi_worker_util

    spec = multi_worker_util.normalize_cluster_spec(resolver.cluster_spec())
    index = multi_worker_util.id_in_cluster(spec, resolver.task_type, resolver.task_id)
    return int(index), count, bool(extended.should_checkpoint)


class PeerFailure(NamedTuple):
    """A diagnosis: `kind` (`"peer"`, `"startup"`), `workers` at fault (chief first), `reason`."""

    kind: str
    workers: Tuple[int, ...]
    reason: str


_TASK = re.compile(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)")
_UNHEALTHY = re.compile(r"tasks are unhealthy[^\n]*\n((?:\s*/job:\S+\n?)+)")
_TIMED_OUT_TASKS = re.compile(r"timed out task names:\s*\n((?:\s*/job:\S+\n?)+)")
_REPORTED = re.compile(r"Error reported from (/job:\w+/(?:replica:\d+/)?task:\d+):\s*([^\n]*)")
_REMOTE = re.compile(r"remote target (/job:\w+/(?:replica:\d+/)?task:\d+)")
_ADDRESS = re.compile(r"ipv[46]:([\w.\-\[\]:]+?:\d+)")
_GONE = ("connection refused", "failed to connect", "socket closed", "connection reset",
         "broken pipe", "unavailable", "connect failed", "end of file")
#: Marks the errors a failing keras_dp worker reports to the others.
_REPORT_MARKER = "keras_dp-worker-failed"


def _addresses(cluster) -> List[str]:
    return [a for role in ("chief", "worker") for a in cluster.get(role, ())]


def _tasks(text: str, cluster) -> List[int]:
    """The worker indices (chief first) of the `/job:.../task:N` names in `text`."""
    tasks = [(job, str(i)) for job in ("chief", "worker") for i in range(len(cluster.get(job, ())))]
    found: List[int] = []
    for task in _TASK.findall(text):
        if task in tasks and tasks.index(task) not in found:
            found.append(tasks.index(task))
    return found


def diagnose(text: str, cluster: Mapping[str, Sequence[str]],
             self_index: Optional[int] = None) -> Optional[PeerFailure]:
    """Which peer failed, read from a TensorFlow error message (`str(exception)`).

    `cluster` is `ClusterInfo.cluster`; `self_index` (this worker) is never blamed.
    None: the error does not come from a peer (e.g. a bug in this worker's program).
    """
    lowered = text.lower()
    addresses = [a.lower() for a in _addresses(cluster)]
    leader = [0]  # the coordination service runs on the first task (chief, else worker 0)

    def result(kind, workers, reason):
        return PeerFailure(kind, tuple(w for w in workers if w != self_index), reason)

    match = _TIMED_OUT_TASKS.search(text)
    if match and "register" in lowered:
        return result("startup", _tasks(match.group(1), cluster),
                      "did not join the cluster in time")
    if "coordinationservice/registertask" in lowered:
        return result("startup", leader,
                      "did not answer: the coordination service it runs is not up (not "
                      "started, or unreachable)")
    match = _UNHEALTHY.search(text)
    if match:
        return result("peer", _tasks(match.group(1), cluster),
                      "stopped sending heartbeats (it died, froze or lost the network)")
    if "coordinationservice/heartbeat" in lowered or "coordinationservice/pollfor" in lowered:
        return result("peer", leader,
                      "stopped answering: the coordination service it runs is unreachable "
                      "(it died, froze or lost the network)")
    match = _REPORTED.search(text)
    if match and _REPORT_MARKER in text:
        reason = text.split(_REPORT_MARKER, 1)[1].strip(" :\n")
        return result("peer", _tasks(match.group(1), cluster),
                      f"failed: {reason.splitlines()[0] if reason else 'an error'}")
    match = _REMOTE.search(text)
    known = [addresses.index(a.lower()) for a in _ADDRESS.findall(text) if a.lower() in addresses]
    if (match or known) and any(marker in lowered for marker in _GONE):
        return result("peer", _tasks(match.group(1), cluster) if match else known[:1],
                      "is gone (its connection was refused or closed)")
    if match and "collective ops is aborted" in lowered:
        return result("peer", _tasks(match.group(1), cluster), "aborted the collective ops")
    if "collective ops is aborted" in lowered or (
            "deadline exceeded" in lowered and "collective" in lowered):
        return result("peer", _tasks(text, cluster), "a collective operation failed")
    return None


def _name(cluster, index: int) -> str:
    addresses = _addresses(cluster)
    return f"worker {index}" + (f" ({addresses[index]})" if 0 <= index < len(addresses) else "")


def peer_message(failure: PeerFailure, cluster, self_index: int) -> str:
    """The one-line explanation a stopping worker prints (see `PEER_LINE`)."""
    code = EXIT_STARTUP_FAILED if failure.kind == "startup" else EXIT_PEER_FAILED
    if failure.kind == "startup":
        who = ", ".join(_name(cluster, w) for w in failure.workers) or "a worker"
        text = (f"keras_dp: worker {self_index} could not start: {who} {failure.reason}. "
                "Start every worker (same TF_CONFIG cluster), check the addresses and "
                "firewalls, or raise startup_timeout.")
    elif failure.workers:
        text = (f"keras_dp: worker {self_index} stops because {_name(cluster, failure.workers[0])} "
                f"{failure.reason}. This is {_name(cluster, self_index)}. Relaunch all workers; "
                "with keras_dp.callbacks.BackupAndRestore training resumes from the last backup.")
    else:
        text = f"keras_dp: worker {self_index} stops because a peer failed ({failure.reason})."
    return f"{text} Exit code {code} ({EXIT_CODES[code]})."


class StartupError(StrategyError):
    """Not every worker joined the cluster within the start-up bound."""

    exit_code = EXIT_STARTUP_FAILED


def unreachable(addresses: Sequence[str], timeout: float = 1.0) -> List[int]:
    """Indices of the addresses where nothing accepts a TCP connection."""
    missing = []
    for index, address in enumerate(addresses):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except (OSError, ValueError):
            missing.append(index)
    return missing


def _exit_now(code: int, message: str) -> None:
    """Prints `message` on stderr and ends the process without waiting for TF."""
    with contextlib.suppress(Exception):  # a closed stream must not stop the exit
        sys.stdout.flush()
    with contextlib.suppress(Exception):
        sys.stderr.write(message.rstrip("\n") + "\n" if message else "")
        sys.stderr.flush()
    os._exit(code)


def register_timeout(startup_timeout: Optional[float]) -> Optional[float]:
    """TF's cluster-registration limit for a start-up bound (docs/fault_tolerance.md)."""
    return startup_timeout and max(startup_timeout * 0.5, startup_timeout - 7.0)


@contextlib.contextmanager
def startup_guard(cluster, timeout: Optional[float]) -> Iterator[None]:
    """Bounds creating the multi-worker strategy to `timeout` s (None: no bound).

    A watchdog exits with `EXIT_STARTUP_FAILED` (docs/fault_tolerance.md); a TF start-up
    error in the block becomes a `StartupError` naming the missing workers.
    """
    done = threading.Event()
    index = cluster.worker_index or 0

    def missing():
        return [i for i in unreachable(cluster.worker_addresses) if i != index]

    def late(peers) -> str:
        reason = f"did not join within {timeout:g} s" + (" (nothing listens there)" * bool(peers))
        return peer_message(PeerFailure("startup", tuple(peers), reason), cluster.cluster, index)

    def watchdog():
        if done.wait(timeout):
            return
        peers = missing()
        if not peers and done.wait(30.0):
            return
        _exit_now(EXIT_STARTUP_FAILED, late(peers or missing()))

    if timeout:
        threading.Thread(target=watchdog, name="keras_dp-startup-watchdog", daemon=True).start()
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - re-raised below
        failure = diagnose(str(exc), cluster.cluster, index)
        if failure is None or failure.kind != "startup":
            raise
        peers = missing()
        raise StartupError(late(peers) if peers else
                           peer_message(failure, cluster.cluster, index)) from None
    finally:
        done.set()


def handle_exception(exc: BaseException, cluster, *, report: bool = True) -> int:
    """Explains a worker's fatal exception; returns the exit code to end with.

    A peer failure prints which peer; this worker's own error is reported to the others
    (`report`, through the coordination service) and ends with its `exit_code`.
    """
    index = cluster.worker_index or 0
    if isinstance(exc, KeyboardInterrupt):
        return 128 + signal.SIGINT
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else EXIT_FAILURE
    if isinstance(exc, StartupError):
        return EXIT_STARTUP_FAILED
    failure = diagnose(str(exc), cluster.cluster, index)
    if failure is not None:
        sys.stderr.write(peer_message(failure, cluster.cluster, index) + "\n")
        return EXIT_STARTUP_FAILED if failure.kind == "startup" else EXIT_PEER_FAILED
    if report and "tensorflow" in sys.modules:  # else no cluster was ever joined
        with contextlib.suppress(Exception):  # best effort: the service may be gone
            from tensorflow.python.eager import context

            ctx = context.context()
            # Not initialized: no cluster joined yet (keras_dp.early configures before it).
            if ctx.coordination_service is not None and getattr(ctx, "_initialized", False):
                summary = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                ctx.report_error_to_cluster(2, f"{_REPORT_MARKER}: {summary[:500]}")
                time.sleep(0.5)  # let the service pass it on before this process vanishes
    return getattr(exc, "exit_code", EXIT_USAGE if isinstance(exc, KerasDPError) else EXIT_FAILURE)
