"""`keras-dp launch` / `keras_dp.launcher` with TensorFlow-free worker processes."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import portpicker
import pytest

from _multiproc import TESTS_DIR, base_env
from keras_dp.cli import main
from keras_dp.errors import ConfigError
from keras_dp.launcher.supervisor import (Launcher, pick_ports, worker_command,
                                          worker_environments)

DUMMY = os.path.join(TESTS_DIR, "workers", "dummy_worker.py")


def launch(mode, num_workers=2, **options):
    out, err = io.StringIO(), io.StringIO()
    options.setdefault("env", base_env())
    result = Launcher([DUMMY, mode], num_workers, stdout=out, stderr=err, **options).run()
    return result, out.getvalue(), err.getvalue()


def test_worker_command_runs_scripts_with_this_python_and_strips_the_separator():
    assert worker_command(["train.py", "--epochs", "3"]) == [sys.executable, "-u", "train.py",
                                                             "--epochs", "3"]
    assert worker_command(["--", "keras-dp", "train"]) == ["keras-dp", "train"]
    with pytest.raises(ConfigError, match="no command to run"):
        worker_command(["--"])


def test_each_worker_gets_its_own_tf_config_and_no_conflicting_variables():
    base = {"KERAS_DP_WORKERS": "a:1,b:1", "KERAS_DP_TASK_INDEX": "1", "TF_CONFIG": "{}",
            "KERAS_DP_CLUSTER": "slurm", "HOME": "/root"}
    envs = worker_environments(3, [1001, 1002, 1003], host="10.0.0.5", base=base, attempt=2,
                               cpu_replicas=1)
    for index, env in enumerate(envs):
        config = json.loads(env["TF_CONFIG"])
        assert config == {"cluster": {"worker": ["10.0.0.5:1001", "10.0.0.5:1002",
                                                 "10.0.0.5:1003"]},
                          "task": {"type": "worker", "index": index}}
        assert env["KERAS_DP_RESTART_COUNT"] == "2" and env["KERAS_DP_CPU_REPLICAS"] == "1"
        assert "KERAS_DP_WORKERS" not in env and "KERAS_DP_CLUSTER" not in env
        assert env["HOME"] == "/root"
    # One worker trains alone: no cluster at all.
    assert "TF_CONFIG" not in worker_environments(1, [1001], base=base)[0]


def test_ports_are_free_distinct_or_follow_the_port_base():
    ports = pick_ports(4)
    assert len(set(ports)) == 4
    base = portpicker.pick_unused_port()
    assert pick_ports(1, port_base=base) == [base]
    assert pick_ports(1, port_base=base - 1, attempt=1) == [base]  # a restart moves on
    with pytest.raises(ConfigError, match="would pass port 65535"):
        pick_ports(2, port_base=65535)


def test_a_used_port_base_is_refused():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} .* is in use"):
            pick_ports(1, port_base=port)


def test_several_cpu_replicas_per_worker_are_refused_with_the_alternatives():
    with pytest.raises(ConfigError) as info:
        Launcher(["x.py"], 2, cpu_replicas=2)
    message = str(info.value)
    assert "one CPU device per worker" in message
    assert "-n 4" in message and "-n 1 --cpu-replicas 2" in message
    Launcher(["x.py"], 1, cpu_replicas=2)  # one process, two replicas: fine


def test_success_prefixes_every_line_and_exits_zero(tmp_path):
    result, out, err = launch("ok", 3, log_dir=str(tmp_path))
    assert result.returncode == 0 and result.attempts == 1
    for index in range(3):
        assert f"[worker {index}] worker {index} of 3, restart 0" in out
        assert f"[worker {index}] stderr of {index}" in err
        assert f"worker {index} of 3" in (tmp_path / f"worker-{index}.log").read_text()
    assert all(status.returncode == 0 for status in result.workers)


def test_a_failure_is_summarised_with_the_worker_its_code_and_last_lines():
    result, out, err = launch("fail", 3)
    assert result.returncode == 3 and result.failed == 1
    assert re.search(r"worker 1 \(127\.0\.0\.1:\d+, pid \d+\) failed first: exit code 3", err)
    assert "    about to fail" in err.split("last lines of worker 1:")[1]
    assert result.summary.endswith("exit code 3")


def test_the_others_are_stopped_when_one_fails():
    result, _, err = launch("hang", 2, stop_grace=1.0)
    assert result.returncode == 5 and result.failed == 1
    # Worker 0 would sleep 60 s: the launcher killed it after its grace, not before.
    assert result.workers[0].killed_by_launcher
    assert result.workers[0].returncode == -signal.SIGKILL
    assert result.workers[0].ended - result.workers[1].ended >= 1.0
    assert "worker 0 (127.0.0.1" in err and "killed by SIGKILL, stopped by the launcher" in err


def test_a_peer_failure_report_names_the_peer():
    result, _, err = launch("peer", 2, stop_grace=0.5)
    assert result.failed == 0 and result.returncode == 76
    assert "it reports that worker 1 failed" in err


def test_max_restarts_starts_every_worker_again(tmp_path):
    result, out, err = launch("fail-once", 2, max_restarts=2, log_dir=str(tmp_path))
    assert result.returncode == 0 and result.attempts == 2
    assert "restarting all 2 workers on new ports (restart 1 of 2)" in err
    assert "[worker 1] worker 1 of 2, restart 1" in out
    log = (tmp_path / "worker-1.log").read_text()
    assert "restart 0" in log and "===== keras-dp launch: restart 1 =====" in log


def test_restarts_run_out():
    result, _, err = launch("fail", 2, max_restarts=1)
    assert result.returncode == 3 and result.attempts == 2


def test_a_usage_error_is_not_restarted():
    result, _, err = launch("usage", 2, max_restarts=3)
    assert result.returncode == 2 and result.attempts == 1
    assert "not restarting: a usage or configuration error" in err


def test_cli_forwards_sigterm_and_does_not_restart_after_it():
    proc = subprocess.Popen([sys.executable, "-m", "keras_dp", "launch", "-n", "2",
                             "--max-restarts", "3", DUMMY, "preempt"], env=base_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    seen = ""
    while seen.count("ready") < 2 and time.time() < deadline:
        seen += proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    out = seen + out
    assert proc.returncode == 75, err
    assert "[worker 0] SIGTERM 0" in out and "[worker 1] SIGTERM 1" in out
    assert "all 2 workers saved a backup and stopped (preempted" in err
    assert "restarting" not in err


def test_a_signal_during_start_up_still_kills_workers_that_ignore_it(monkeypatch):
    from keras_dp.launcher import supervisor

    monkeypatch.setattr(supervisor, "SIGNAL_GRACE", 1.0)

    out, err = io.StringIO(), io.StringIO()

    class SignalledWhileStarting(Launcher):
        def _say(self, text):
            super()._say(text)
            if text.startswith("worker 1 started"):   # still in the start-up loop
                deadline = time.monotonic() + 20
                while out.getvalue().count("deaf") < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)   # until both ignore SIGTERM
                self._on_signal(signal.SIGTERM, None)

    started = time.monotonic()
    result = SignalledWhileStarting([DUMMY, "deaf"], 2, env=base_env(), stdout=out,
                                    stderr=err).run()
    assert time.monotonic() - started < 30, err.getvalue()   # not the workers' 60 s
    assert all(w.killed_by_launcher and w.returncode == -signal.SIGKILL
               for w in result.workers), err.getvalue()
    assert result.attempts == 1


def test_cli_usage_errors(capsys):
    assert main(["launch", "-n", "2", "--cpu-replicas", "2", DUMMY, "ok"]) == 2
    assert "one CPU device per worker" in capsys.readouterr().err
    assert main(["launch", "-n", "0", DUMMY, "ok"]) == 2
    assert main(["launch", "-n", "2"]) == 2
    assert "no command to run" in capsys.readouterr().err


def test_cli_runs_a_command_after_the_separator(capfd):
    code = main(["launch", "-n", "2", "--no-prefix", "--", sys.executable, DUMMY, "ok"])
    out = capfd.readouterr().out
    assert code == 0
    assert re.search(r"^worker 1 of 2, restart 0, replicas None$", out, re.M), out


def test_the_launching_process_never_imports_tensorflow():
    # Start-up: the launcher must not spend an `import tensorflow` (seconds) of its own.
    code = ("import sys; from keras_dp.cli import main; "
            f"code = main(['launch', '-n', '2', {DUMMY!r}, 'ok']); "
            "print('TF', 'tensorflow' in sys.modules, 'keras' in sys.modules); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code], env=base_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "TF False False", result.stdout


def test_a_stopped_worker_counts_as_failed_and_the_restart_recovers():
    """Worker 1 SIGSTOPs itself while worker 0 waits for it (as in start-up): without the
    launcher's check nothing ever ends (a stopped process neither exits nor answers)."""
    import threading

    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(
        zip(("result", "out", "err"), launch("stop-once", 2, stop_grace=1.0, max_restarts=1))),
        daemon=True)
    thread.start()
    thread.join(45)
    if thread.is_alive():
        for line in subprocess.run(["pgrep", "-f", DUMMY], capture_output=True,
                                   text=True).stdout.split():
            os.kill(int(line), signal.SIGKILL)
        thread.join(10)
        pytest.fail("the launcher never noticed the stopped worker")
    result, err = outcome["result"], outcome["err"]
    assert result.returncode == 0 and result.attempts == 2, err
    assert "worker 1 has been stopped (SIGSTOP) for 1 s and holds up every other worker: " \
           "killing it" in err
    assert re.search(r"worker 1 \(127\.0\.0\.1:\d+, pid \d+\) failed first: killed by SIGKILL, "
                     r"after it had been stopped \(SIGSTOP\) for 1 s", err), err


def test_is_stopped_reads_the_process_state():
    from keras_dp.launcher.stopped import is_stopped

    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert is_stopped(proc.pid) is False
        os.kill(proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while not is_stopped(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert is_stopped(proc.pid) is True
        os.kill(proc.pid, signal.SIGCONT)
        while is_stopped(proc.pid) and time.monotonic() < deadline + 10:
            time.sleep(0.02)
        assert is_stopped(proc.pid) is False
    finally:
        proc.kill()
        proc.wait()
    assert is_stopped(proc.pid) is None  # gone
