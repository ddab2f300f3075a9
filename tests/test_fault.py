"""keras_dp.fault: exit codes, which peer failed (from TensorFlow's own error texts)."""

import inspect
import signal
import socket

import pytest

from keras_dp import fault
from keras_dp.errors import ConfigError

CLUSTER = {"worker": ["127.0.0.1:41000", "127.0.0.1:41115", "127.0.0.1:41200"]}

# Error texts TensorFlow 2.21 raised in the surviving worker (recorded on this machine).
KILLED = """Graph execution error:
Collective ops is aborted by: failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:41115: Failed to connect to remote host: Connection refused
Additional GRPC error information from remote target /job:worker/replica:0/task:1 while calling /tensorflow.WorkerService/RecvBuf:
:UNKNOWN:Error received from peer  {grpc_status:14, grpc_message:"failed to connect to all addresses"}
The error could be from a previous operation. Restart your program to reset.
\t [[{{node sgd/CollectiveReduceV2}}]] [Op:__inference_multi_step_on_iterator_600]"""
FROZEN = """Collective ops is aborted by: Error reported from /job:worker/task:1: The following tasks are unhealthy (stopped sending heartbeats):
/job:worker/replica:0/task:2
The tasks have crashed. Check the task logs for an earlier error, or scheduler events (e.g. preemption, eviction) to debug further.
The error could be from a previous operation. Restart your program to reset."""
LEADER_FROZEN = """Collective ops is aborted by: Deadline Exceeded
RPC: /tensorflow.CoordinationService/Heartbeat
The error could be from a previous operation. Restart your program to reset."""
NEVER_JOINED = """Barrier timed out. Id: [Init]Wait_for_all_tasks_to_register::0. This usually happens because a task triggered the barrier too early or too slowly.
# of tasks that reached the barrier: 1/3.
The first task at the barrier: /job:worker/replica:0/task:0. Some timed out task names:
/job:worker/replica:0/task:1
/job:worker/replica:0/task:2

Additional GRPC error information from remote target /job:worker/replica:0/task:0 while calling /tensorflow.CoordinationService/RegisterTask:"""
NO_LEADER = """Deadline Exceeded
Additional GRPC error information from remote target /job:worker/replica:0/task:0 while calling /tensorflow.CoordinationService/RegisterTask:
:UNKNOWN:Error received from peer  {grpc_message:"Deadline Exceeded", grpc_status:4}"""
REPORTED = """Collective ops is aborted by: Error reported from /job:worker/task:2: keras_dp-worker-failed: ValueError: bad shape
The error could be from a previous operation. Restart your program to reset."""


@pytest.mark.parametrize("text,kind,workers,reason", [
    (KILLED, "peer", (1,), "is gone"),
    (FROZEN, "peer", (2,), "stopped sending heartbeats"),
    (LEADER_FROZEN, "peer", (0,), "coordination service it runs is unreachable"),
    (NEVER_JOINED, "startup", (1, 2), "did not join"),
    (NO_LEADER, "startup", (0,), "did not answer"),
    (REPORTED, "peer", (2,), "failed: ValueError: bad shape"),
])
def test_diagnose_names_the_failed_peer(text, kind, workers, reason):
    failure = fault.diagnose(text, CLUSTER, self_index=None)
    assert failure.kind == kind and failure.workers == workers
    assert reason in failure.reason


def test_diagnose_ignores_this_workers_own_errors():
    assert fault.diagnose("ValueError: shapes (3,) and (4,) are incompatible", CLUSTER) is None
    assert fault.diagnose("", CLUSTER) is None
    # A worker never blames itself.
    assert fault.diagnose(NO_LEADER, CLUSTER, self_index=0).workers == ()


def test_task_names_map_to_worker_indices_with_a_chief():
    cluster = {"chief": ["c:1"], "worker": ["w0:1", "w1:1"]}
    text = FROZEN.replace("/job:worker/replica:0/task:2", "/job:worker/replica:0/task:1")
    assert fault.diagnose(text, cluster).workers == (2,)
    text = FROZEN.replace("/job:worker/replica:0/task:2", "/job:chief/replica:0/task:0")
    assert fault.diagnose(text, cluster).workers == (0,)


def test_the_stop_message_names_the_peer_and_the_exit_code():
    message = fault.peer_message(fault.diagnose(KILLED, CLUSTER), CLUSTER, 0)
    assert message.startswith("keras_dp: worker 0 stops because worker 1 (127.0.0.1:41115) ")
    assert "Exit code 76" in message
    assert fault.PEER_LINE.search(message).group(2) == "1"
    message = fault.peer_message(fault.diagnose(NEVER_JOINED, CLUSTER), CLUSTER, 0)
    assert "worker 1 (127.0.0.1:41115), worker 2 (127.0.0.1:41200) did not join" in message
    assert "Exit code 77" in message


def test_exit_codes_are_distinct_and_described():
    codes = [fault.EXIT_OK, fault.EXIT_FAILURE, fault.EXIT_USAGE, fault.EXIT_PREEMPTED,
             fault.EXIT_PEER_FAILED, fault.EXIT_STARTUP_FAILED]
    assert len(set(codes)) == len(codes)
    assert fault.describe_exit(75) == ("exit code 75 (preempted: a backup was saved, "
                                       "relaunch to resume)")
    assert fault.describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert fault.describe_exit(137) == "exit code 137 (probably SIGKILL)"
    assert fault.describe_exit(None) == "still running"


def test_handle_exception_picks_the_exit_code(capsys):
    from keras_dp import resolve_cluster

    cluster = resolve_cluster({"KERAS_DP_WORKERS": ",".join(CLUSTER["worker"]),
                               "KERAS_DP_TASK_INDEX": "0"})
    assert fault.handle_exception(RuntimeError(KILLED), cluster, report=False) == 76
    assert "worker 0 stops because worker 1" in capsys.readouterr().err
    assert fault.handle_exception(RuntimeError(NEVER_JOINED), cluster, report=False) == 77
    assert fault.handle_exception(ValueError("mine"), cluster, report=False) == 1
    assert fault.handle_exception(ConfigError("bad"), cluster, report=False) == 2
    assert fault.handle_exception(SystemExit(75), cluster, report=False) == 75
    assert fault.handle_exception(KeyboardInterrupt(), cluster, report=False) == 130


def test_start_up_bound_defaults_to_120_s_and_tensorflow_gets_less():
    from keras_dp.strategy import get_strategy

    default = inspect.signature(get_strategy).parameters["startup_timeout"].default
    assert 0 < default <= 120
    assert fault.register_timeout(120) == 113
    assert fault.register_timeout(15) == 8
    assert fault.register_timeout(None) is None


def test_unreachable_finds_the_addresses_nobody_listens_on():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        listening = f"127.0.0.1:{server.getsockname()[1]}"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed = f"127.0.0.1:{probe.getsockname()[1]}"  # bound, not listening
            assert fault.unreachable([listening, closed]) == [1]


def test_installed_hook_prints_the_cause_and_exits_with_its_code(monkeypatch, capsys):
    from keras_dp import resolve_cluster

    exits = []
    monkeypatch.setattr(fault, "_exit_now", lambda code, message: exits.append(code))
    cluster = resolve_cluster({"KERAS_DP_WORKERS": ",".join(CLUSTER["worker"]),
                               "KERAS_DP_TASK_INDEX": "2"})
    from keras_dp import keras_fix
    from keras_dp.keras_fix import failure_hook

    previous = fault.sys.excepthook
    failure_hook.install(cluster)
    try:
        try:
            raise RuntimeError(KILLED)
        except RuntimeError as exc:
            fault.sys.excepthook(type(exc), exc, exc.__traceback__)
        try:
            raise fault.StartupError("keras_dp: worker 2 could not start: ...")
        except fault.StartupError as exc:
            fault.sys.excepthook(type(exc), exc, exc.__traceback__)
    finally:
        keras_fix.remove(["failure_hook"])
    assert fault.sys.excepthook is previous
    assert exits == [76, 77]
    err = capsys.readouterr().err
    assert "Traceback" in err and "keras_dp: worker 2 stops because worker 1" in err
    assert "keras_dp: worker 2 could not start" in err
