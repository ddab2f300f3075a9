"""Real multi-worker runs through `keras-dp launch`: failures, preemption, exact resume.

Every test trains `_problem`'s model for 3 epochs of 6 steps on 2 worker
processes (`tests/workers/resume_worker.py`); the uninterrupted result equals
one device with the same global batch (`reference_weights`), so "the final
weights equal the reference" means nothing was lost and nothing repeated.
Times are checked as order (a survivor ends after the failure it reacts to)
and with generous bounds, several times what keras_dp promises (a failure
named within 60 s, an exit within 5 s of the last step, start-up failing at
its bound), so that a loaded 2-core machine does not fail them while a hang
still does; each test prints what it measured (`pytest -s` shows it).
"""

#: Seconds: a failure is named within 60 s; allowed here, on a loaded machine.
DETECT_BOUND = 120
#: Seconds after its last step a worker exits (within 5 s); allowed here.
EXIT_BOUND = 30

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import _problem
from _launch import RESUME_WORKER, LaunchRun
from _multiproc import base_env, free_ports

pytestmark = pytest.mark.multiprocess

EPOCHS, STEPS = 3, 6


@pytest.fixture(scope="module")
def reference_weights(tf):
    """One device, global batch 16, 3 epochs over the same 6 batches."""
    x, y = _problem.data(STEPS, _problem.GLOBAL_BATCH)
    model = _problem.build_model()
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(_problem.GLOBAL_BATCH),
              epochs=EPOCHS, verbose=0, shuffle=False)
    return model.get_weights()


def max_diff(path, reference):
    weights = list(np.load(path).values())
    assert len(weights) == len(reference)
    return max(float(np.max(np.abs(a - b))) for a, b in zip(weights, reference))


def files_under(path):
    return sorted(os.path.relpath(os.path.join(root, name), path)
                  for root, dirs, names in os.walk(path) for name in names + dirs)


def test_launch_trains_exits_promptly_and_only_the_chief_writes(tmp_path, reference_weights):
    temp = tmp_path / "tmp"
    temp.mkdir()
    run = LaunchRun(["-n", "2", "--log-dir", str(tmp_path / "logs"), RESUME_WORKER,
                     str(tmp_path), "--per-worker-cwd", "--backup", "backup", "--keep-backup",
                     "--save-freq", "4"], env={"TMPDIR": str(temp)})
    assert run.finish(240) == 0, run.text()[-6000:]
    text = run.text()
    # Every line is prefixed with its worker; each worker got its own TF_CONFIG index.
    assert re.search(r"^\[worker 0\] STEP 18 ", text, re.M), text[-3000:]
    assert re.search(r"^\[worker 1\] STEP 18 ", text, re.M), text[-3000:]
    assert "STEP 18" in (tmp_path / "logs" / "worker-1.log").read_text()
    assert max_diff(tmp_path / "weights.npz", reference_weights) <= 1e-5

    chief, other = tmp_path / "cwd0", tmp_path / "cwd1"
    assert (chief / "user" / "ckpt" / "model.weights.h5").is_file()
    assert len((chief / "user" / "log.csv").read_text().splitlines()) == EPOCHS + 1
    assert any("events" in name for name in files_under(chief / "user" / "tb"))
    assert (chief / "backup" / "latest").is_file()
    # The non-chief wrote nothing where the user's relative paths point for it,
    # and removed its temporary directories.
    assert files_under(other) == []
    assert not [name for name in os.listdir(temp) if name.startswith("keras_dp")]

    # Clean finish: every worker exits within 5 s of its last step.
    for worker in (0, 1):
        ended = run.when(rf"\[launcher\] worker {worker} ended after .*: exit code 0")
        lag = ended - run.last_step_time(worker)
        print(f"worker {worker}: exit {lag:.2f} s after its last step")
        assert 0 <= lag <= EXIT_BOUND, (worker, lag)


def test_killed_worker_stops_the_launch_and_is_named(tmp_path):
    run = LaunchRun(["-n", "2", RESUME_WORKER, str(tmp_path), "--sleep", "0.5",
                     "--save-freq", "epoch"])
    run.wait_for(r"^\[worker 1\] STEP 3 ")
    killed = run.signal_worker(1, signal.SIGKILL)
    code = run.finish(DETECT_BOUND + 60)
    elapsed = run.ended - killed
    text = run.text()
    survivor = run.when(r"\[launcher\] worker 0 ended after .*: exit code 76") - killed
    print(f"SIGKILL: worker 0 exited {survivor:.1f} s after, launcher {elapsed:.1f} s after")
    assert code == 128 + signal.SIGKILL, text[-4000:]
    assert 0 < survivor <= elapsed <= DETECT_BOUND, (survivor, elapsed)
    assert re.search(r"worker 1 \(127\.0\.0\.1:\d+, pid \d+\) failed first: killed by SIGKILL",
                     text), text[-4000:]
    assert re.search(r"keras_dp: worker 0 stops because worker 1 \(127\.0\.0\.1:\d+\)", text)


def test_frozen_peer_is_detected_and_named(tmp_path):
    # The workers' own detection (TensorFlow's heartbeat, 10 s), as under SLURM or
    # Kubernetes: the launcher's stopped-worker rule (--stop-grace) is set later
    # than it, so it only kills the frozen worker once worker 0 has named it.
    run = LaunchRun(["-n", "2", "--stop-grace", "25", RESUME_WORKER, str(tmp_path),
                     "--sleep", "0.5", "--save-freq", "epoch"])
    run.wait_for(r"^\[worker 1\] STEP 3 ")
    frozen = run.signal_worker(1, signal.SIGSTOP)
    try:
        code = run.finish(DETECT_BOUND + 60)
    finally:
        try:
            os.kill(run.pid(1), signal.SIGKILL)
        except ProcessLookupError:
            pass
    text = run.text()
    survivor = run.when(r"\[launcher\] worker 0 ended after .*: exit code 76") - frozen
    print(f"SIGSTOP: worker 0 exited {survivor:.1f} s after, launcher "
          f"{run.ended - frozen:.1f} s after")
    assert 0 < survivor <= run.ended - frozen <= DETECT_BOUND, survivor
    assert code == 76, text[-4000:]
    assert re.search(r"keras_dp: worker 0 stops because worker 1 \(127\.0\.0\.1:\d+\) stopped "
                     r"sending heartbeats", text), text[-4000:]
    assert "it reports that worker 1 failed" in text
    assert re.search(r"worker 1 \(127\.0\.0\.1:\d+\): killed by SIGKILL, after it had been "
                     r"stopped \(SIGSTOP\) for 25 s", text), text[-4000:]


def test_max_restarts_resumes_a_kill_mid_epoch_exactly(tmp_path, reference_weights):
    # Worker 1 SIGKILLs itself after global step 9 (epoch 2, step 3) on the first
    # launch; the last backup is step 8, so step 9 is done again, once.
    run = LaunchRun(["-n", "2", "--max-restarts", "1", RESUME_WORKER, str(tmp_path),
                     "--kill-at", "9", "--save-freq", "2"])
    assert run.finish(300) == 0, run.text()[-6000:]
    text = run.text()
    assert "restarting all 2 workers on new ports (restart 1 of 1)" in text
    assert re.search(r"worker 1 .* failed first: killed by SIGKILL", text)
    assert "restored the backup of step 8 (epoch 2, step 2 of it)" in text
    diff = max_diff(tmp_path / "weights.npz", reference_weights)
    print(f"kill + restart: max abs diff to the uninterrupted run {diff:.2e}")
    assert diff <= 1e-5
    assert json.loads((tmp_path / "result.json").read_text())["global_step"] == EPOCHS * STEPS
    assert not (tmp_path / "backup").exists()  # deleted once training finished


def test_sigterm_saves_at_a_common_step_and_a_relaunch_resumes(tmp_path, reference_weights):
    args = ["-n", "2", RESUME_WORKER, str(tmp_path), "--repeat", "--save-freq", "epoch",
            "--sleep", "0.2"]
    run = LaunchRun(args)
    run.wait_for(r"^\[worker 1\] STEP 8 ")
    run.signal_worker(1, signal.SIGTERM)
    code = run.finish(DETECT_BOUND + 60)
    text = run.text()
    assert code == 75, text[-4000:]
    _, match = run.wait_for(r"worker 1 received SIGTERM: all 2 workers save a backup after "
                            r"step (\d+) and stop", 1)
    stop = int(match.group(1))
    assert re.search(r"worker 0 ended after .*: exit code 75", text)
    assert re.search(r"worker 1 ended after .*: exit code 75", text)
    latest = json.loads((tmp_path / "backup" / "latest").read_text())["name"]
    meta = json.loads((tmp_path / "backup" / latest / "meta.json").read_text())
    assert meta["global_step"] == stop and meta["reason"] == "preemption"

    again = LaunchRun(args)
    assert again.finish(240) == 0, again.text()[-6000:]
    assert f"restored the backup of step {stop} " in again.text()
    diff = max_diff(tmp_path / "weights.npz", reference_weights)
    print(f"SIGTERM at step {stop} + relaunch: max abs diff {diff:.2e}")
    assert diff <= 1e-5


def test_a_worker_that_never_starts_is_named_within_the_startup_bound(tmp_path):
    """Worker 1 of one cluster and worker 0 (the coordination leader) of another never start."""
    bound = 15.0
    procs = []
    for present in (0, 1):
        ports = free_ports(2)
        env = base_env({"KERAS_DP_WORKERS": ",".join(f"127.0.0.1:{p}" for p in ports),
                        "KERAS_DP_TASK_INDEX": str(present)})
        missing = f"127.0.0.1:{ports[1 - present]}"
        procs.append((present, missing, subprocess.Popen(
            [sys.executable, RESUME_WORKER, str(tmp_path / str(present)), "--startup-timeout",
             str(bound)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)))
    for present, missing, proc in procs:
        output, _ = proc.communicate(timeout=180)
        ended = time.time()
        started = float(re.search(r"STARTING ([\d.]+)", output).group(1))
        print(f"worker {present} alone: start-up failed {ended - started:.1f} s after "
              f"keras_dp.scope() (bound {bound:g} s)")
        assert proc.returncode == 77, output[-4000:]
        assert re.search(rf"worker {present} could not start: worker {1 - present} "
                         rf"\({re.escape(missing)}\) did not join", output), output[-4000:]
        assert ended - started <= bound + EXIT_BOUND, ended - started
