"""`keras-dp launch --isolate`: the workers' ports exist only inside the launch.

TensorFlow's gRPC server listens on 0.0.0.0:PORT with no authentication;
`--isolate` runs the workers in a private network namespace holding only
loopback. The multiprocess test trains inside it and shows that a worker's
port, open inside the namespace, refuses a connection from outside.
"""

import errno
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

from _launch import LaunchRun
from _multiproc import TESTS_DIR
from keras_dp.cli import main
from keras_dp.launcher import isolation

JOB_WORKER = os.path.join(TESTS_DIR, "workers", "job_worker.py")
TRAIN = ["--steps", "8", "--backup-every", "3", "--d-model", "32", "--num-layers", "1",
         "--num-heads", "2", "--seq-len", "32", "--batch-size", "4", "--val-steps", "2",
         "--progress", "none", "--warmup-steps", "1", "--sample-tokens", "0"]


def connect(port: int) -> str:
    """'open' or 'refused' for 127.0.0.1:port from this process's network namespace."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return "open"
    except ConnectionRefusedError:
        return "refused"


def test_unavailable_namespaces_give_one_error_with_why_and_what_to_do(monkeypatch, capsys):
    def refused(flags):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(isolation, "_unshare", refused)
    # (Other tests of the session may have left threads running.)
    monkeypatch.setattr(isolation.threading, "active_count", lambda: 1)
    with pytest.raises(isolation.IsolationUnavailable) as caught:
        isolation.enter_private_network()
    message = str(caught.value)
    assert "unshare() was not permitted" in message
    assert "allow unprivileged user namespaces" in message and "Security" in message
    assert message.endswith("Received: --isolate=True")

    assert main(["launch", "-n", "2", "--isolate", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert "private network namespace (unshare() was not permitted" in err


def test_isolate_refuses_a_host_other_machines_would_use(capsys):
    assert main(["launch", "-n", "2", "--isolate", "--host", "10.0.0.5", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert "--host: --isolate keeps the workers on this machine's loopback" in err
    assert "Received: --host=10.0.0.5" in err


@pytest.mark.multiprocess
@pytest.mark.skipif(shutil.which("nsenter") is None or os.geteuid() != 0,
                    reason="the inside-the-namespace check enters it with nsenter as root")
def test_workers_train_isolated_and_their_port_refuses_outsiders(tmp_path):
    run = LaunchRun(["-n", "2", "--isolate", JOB_WORKER, "--", "--output-dir",
                     str(tmp_path / "out"), *TRAIN])
    run.wait_for(r"^\[worker 1\] STEP 2$", 240)
    text = run.text()
    assert "[launcher] isolated: the workers run in a private network namespace" in text
    ports = [int(p) for p in re.findall(r"\[launcher\] worker \d started: 127\.0\.0\.1:(\d+)",
                                        text)]
    pid = run.pid(0)
    outside = [connect(port) for port in ports]
    # The same connection from inside the workers' namespace reaches the port.
    inside = subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c",
         f"import socket; socket.create_connection(('127.0.0.1', {ports[0]}), 5).close()"],
        capture_output=True, text=True, timeout=30)
    code = run.finish(240)
    assert code == 0, run.text()[-6000:]
    assert outside == ["refused", "refused"]
    assert inside.returncode == 0, inside.stderr
    assert (tmp_path / "out" / "model.keras").exists()
