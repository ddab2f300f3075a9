"""The compat corpus: public Keras/TensorFlow programs, one line changed, run as users run them.

Each program in `tests/compat/programs/` is modelled on a public guide or
tutorial (its header names the source, commit and every difference; see
tests/compat/README.md). Some of the tutorials' cells predate Keras 3; those
lines are ported the way the Keras 3 migration guide says (`model.save()` to a
`.keras` file, string/None loss reductions, `metric.reset_state()`), and each
program's header lists them.

The programs run unchanged in a subprocess: alone (`python prog.py`), under
`keras-dp launch -n 2`, or, for TensorFlow's multi-worker tutorials, as two
workers each given the tutorial's hand-written TF_CONFIG on free ports. A
test-only `sitecustomize` (tests/compat/harness/, on PYTHONPATH for these runs
only) records each process's final weights and the files it wrote, so the
tests check what each program promises without touching it: it finishes, all
workers end with the same weights, every file is written by one process and
loads, and a rerun resumes.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from _multiproc import base_env, free_ports

COMPAT = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = os.path.join(COMPAT, "programs")
HARNESS = os.path.join(COMPAT, "harness")
TIMEOUT = 240


class Run:
    """One run of a corpus program: its output and what the harness recorded."""

    def __init__(self, output: str, record_dir: str):
        self.output = output
        self.record_dir = record_dir

    def _files(self, kind):
        found = {}
        for path in sorted(glob.glob(os.path.join(self.record_dir, f"{kind}-*"))):
            task = os.path.basename(path).split("-")[1]
            assert task not in found, f"two processes recorded as {task}: {path}"
            found[task] = path
        return found

    def weights(self):
        """Final weights per task ("single", "worker0", ...): lists of arrays."""
        result = {}
        for task, path in self._files("weights").items():
            with np.load(path) as data:
                result[task] = [data[k] for k in sorted(data.files)]
        assert result, "no process recorded weights:\n" + self.output[-4000:]
        return result

    def writes(self):
        """Files (relative to the working directory) each task wrote through Python."""
        result = {}
        for task, path in self._files("writes").items():
            with open(path) as handle:
                result[task] = json.load(handle)
        return result


def corpus_env(record_dir, extra=None):
    env = base_env(extra)
    env["PYTHONPATH"] = os.pathsep.join([HARNESS, env["PYTHONPATH"]])
    env["COMPAT_HARNESS_DIR"] = str(record_dir)
    return env


def _check(returncode, output, what):
    assert returncode == 0, f"{what} exited {returncode}:\n{output[-8000:]}"


def run_alone(program, work, record, env=None) -> Run:
    """`python programs/<program>` in `work`."""
    done = subprocess.run([sys.executable, os.path.join(PROGRAMS, program)], cwd=work,
                          env=corpus_env(record, env), capture_output=True, text=True,
                          timeout=TIMEOUT)
    _check(done.returncode, done.stdout + done.stderr, program)
    return Run(done.stdout + done.stderr, str(record))


def run_launch(program, work, record) -> Run:
    """`keras-dp launch -n 2 programs/<program>` in `work`."""
    done = subprocess.run([sys.executable, "-m", "keras_dp", "launch", "-n", "2",
                           os.path.join(PROGRAMS, program)], cwd=work, env=corpus_env(record),
                          capture_output=True, text=True, timeout=TIMEOUT)
    _check(done.returncode, done.stdout + done.stderr, f"keras-dp launch -n 2 {program}")
    return Run(done.stdout + done.stderr, str(record))


def run_tf_config_workers(program, work, record, num_workers=2) -> Run:
    """The tutorials' way: `python main.py` per worker, each with its own TF_CONFIG.

    The TF_CONFIG is the tutorials' (`localhost` addresses, task type
    "worker"), on free ports instead of 12345 and 23456.
    """
    ports = free_ports(num_workers)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    procs = []
    for index in range(num_workers):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        log = open(os.path.join(str(record) + f".worker{index}.log"), "w+")
        procs.append((subprocess.Popen(
            [sys.executable, os.path.join(PROGRAMS, program)], cwd=work,
            env=corpus_env(record, {"TF_CONFIG": json.dumps(tf_config)}),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log))
    deadline = time.time() + TIMEOUT
    while any(p.poll() is None for p, _ in procs) and time.time() < deadline:
        if any(p.poll() not in (None, 0) for p, _ in procs):
            # A failed worker leaves its peers waiting on it: give them 10 s to stop.
            deadline = min(deadline, time.time() + 10)
        time.sleep(0.2)
    outputs = []
    for index, (proc, log) in enumerate(procs):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.seek(0)
        outputs.append(f"--- worker {index} (exit {proc.returncode}) ---\n{log.read()}")
        log.close()
    output = "\n".join(outputs)
    for proc, _ in procs:
        _check(proc.returncode, output, f"{num_workers} workers of {program}")
    return Run(output, str(record))


def assert_same_weights(run: Run, tasks=("worker0", "worker1")):
    weights = run.weights()
    assert sorted(weights) == sorted(tasks), (sorted(weights), run.output[-3000:])
    first = weights[tasks[0]]
    for task in tasks[1:]:
        assert len(weights[task]) == len(first)
        for a, b in zip(first, weights[task]):
            assert a.shape == b.shape and np.max(np.abs(a - b), initial=0.0) <= 1e-6, task
    return first


def assert_written_by(run: Run, path, writer, times=None):
    """`path` was written through Python by `writer` alone (`times` times if given)."""
    writes = run.writes()
    by = {task: files.count(path) for task, files in writes.items() if path in files}
    assert set(by) == {writer}, f"{path} written by {by}"
    if times is not None:
        assert by[writer] == times, f"{path} written {by[writer]} times by {writer}"


def load_keras(tf, path):
    import keras

    return keras.saving.load_model(str(path))


def assert_model_weights(model, expected):
    actual = [np.asarray(w) for w in model.trainable_weights]
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        assert np.max(np.abs(a - b), initial=0.0) <= 1e-6


def dirs(tmp_path, name):
    work, record = tmp_path / f"{name}_work", tmp_path / f"{name}_record"
    work.mkdir(exist_ok=True)
    return work, record


# -- keras.io: Multi-GPU distributed training with TensorFlow, part 1 -------------------
FIT = "keras_io_distributed_fit.py"


@pytest.mark.multiprocess
def test_distributed_fit_alone(tmp_path):
    """As the guide runs it: MirroredStrategy over this machine's devices (2 CPU replicas)."""
    work, record = dirs(tmp_path, "fit")
    run = run_alone(FIT, work, record, env={"KERAS_DP_CPU_REPLICAS": "2"})
    assert "Number of devices: 2" in run.output
    assert "Epoch 2/2" in run.output and "val_sparse_categorical_accuracy" in run.output
    assert list(run.weights()) == ["single"]
    assert os.listdir(work) == []


@pytest.mark.multiprocess
def test_distributed_fit_two_workers(tmp_path):
    work, record = dirs(tmp_path, "fit2")
    run = run_launch(FIT, work, record)
    assert run.output.count("Number of devices: 2") == 2
    assert_same_weights(run)
    assert os.listdir(work) == []


# -- keras.io: the same guide, part 2 (make_or_restore_model + ModelCheckpoint) ---------
CHECKPOINT = "keras_io_distributed_checkpoint.py"
STEPS_PER_FIT = 24  # 768 training examples, batch 32


def check_checkpoint_loop(tf, work, first: Run, second: Run, writer):
    """Run 1 creates then restores; run 2 restores twice; ckpt-1.keras holds the last state."""
    assert first.output.count("Creating a new model") == first.output.count(
        "Restoring from ./ckpt/ckpt-1.keras") == (2 if writer == "worker0" else 1)
    assert "Creating a new model" not in second.output
    assert second.output.count("Restoring from ./ckpt/ckpt-1.keras") == (
        4 if writer == "worker0" else 2)
    assert sorted(os.listdir(work)) == ["ckpt"]
    assert os.listdir(work / "ckpt") == ["ckpt-1.keras"]
    for run in (first, second):
        # One writer, once per run_training() call (two per run).
        assert_written_by(run, os.path.join("ckpt", "ckpt-1.keras"), writer, times=2)
    final = second.weights()[writer]
    model = load_keras(tf, work / "ckpt" / "ckpt-1.keras")
    assert_model_weights(model, final)
    # Each of the 4 run_training() calls resumed the optimizer where the last one stopped.
    assert int(model.optimizer.iterations.numpy()) == 4 * STEPS_PER_FIT


@pytest.mark.multiprocess
def test_checkpoint_loop_alone_rerun_resumes(tf, tmp_path):
    work, record = dirs(tmp_path, "ckpt")
    first = run_alone(CHECKPOINT, work, str(record) + "_1")
    second = run_alone(CHECKPOINT, work, str(record) + "_2")
    check_checkpoint_loop(tf, work, first, second, "single")


@pytest.mark.multiprocess
def test_checkpoint_loop_two_workers_rerun_resumes(tf, tmp_path):
    """Datasets built before the strategy (point 1), stock ModelCheckpoint (points 2-3)."""
    work, record = dirs(tmp_path, "ckpt2")
    first = run_launch(CHECKPOINT, work, str(record) + "_1")
    assert_same_weights(first)
    second = run_launch(CHECKPOINT, work, str(record) + "_2")
    assert_same_weights(second)
    check_checkpoint_loop(tf, work, first, second, "worker0")


# -- tensorflow.org: Multi-worker training with Keras ----------------------------------
KERAS_MAIN = "multi_worker_with_keras_main.py"
KERAS_BACKUP = "multi_worker_with_keras_backup.py"


def check_tutorial_model(tf, work, run: Run):
    weights = assert_same_weights(run)
    # The chief wrote the model; the other worker's temporary folder is gone.
    assert sorted(os.listdir(work)) == ["keras-model.keras"]
    assert_written_by(run, "keras-model.keras", "worker0", times=1)
    model = load_keras(tf, work / "keras-model.keras")
    assert_model_weights(model, weights)
    # The tutorial goes on training the loaded model on one worker.
    images = np.zeros((4, 28, 28), np.float32)
    model.fit(images, np.zeros(4, np.int64), epochs=1, verbose=0)


@pytest.mark.multiprocess
def test_multi_worker_keras_tf_config_by_hand(tf, tmp_path):
    work, record = dirs(tmp_path, "mwk")
    run = run_tf_config_workers(KERAS_MAIN, work, record)
    assert run.output.count("Epoch 2/2") == 2
    check_tutorial_model(tf, work, run)


@pytest.mark.multiprocess
def test_multi_worker_keras_under_launch(tf, tmp_path):
    """The program's own `json.loads(os.environ['TF_CONFIG'])` reads the launcher's TF_CONFIG."""
    work, record = dirs(tmp_path, "mwk_launch")
    run = run_launch(KERAS_MAIN, work, record)
    check_tutorial_model(tf, work, run)


@pytest.mark.multiprocess
def test_multi_worker_keras_backup_and_restore(tmp_path):
    """Stock BackupAndRestore on one shared folder (point 2): one writer, removed at the end."""
    work, record = dirs(tmp_path, "mwk_backup")
    run = run_tf_config_workers(KERAS_BACKUP, work, record)
    assert run.output.count("Epoch 2/2") == 2
    assert_same_weights(run)
    assert os.listdir(work) == []  # the backup is deleted after a finished fit
    writes = run.writes()
    assert any(path.startswith("backup") for path in writes["worker0"]), writes
    assert not any(path.startswith("backup") for path in writes.get("worker1", [])), writes


# -- tensorflow.org: Custom training loop with Keras and MultiWorkerMirroredStrategy ----
CTL_MAIN = "multi_worker_with_ctl_main.py"


@pytest.mark.multiprocess
def test_multi_worker_ctl_tf_config_by_hand(tmp_path):
    work, record = dirs(tmp_path, "ctl")
    run = run_tf_config_workers(CTL_MAIN, work, record)
    for epoch in (0, 1):
        assert run.output.count(f"Epoch: {epoch}, accuracy:") == 2
    assert_same_weights(run)
    # The tutorial's checkpoints live in each process's multiprocessing temp folder.
    assert os.listdir(work) == []


# -- keras.io: Writing a training loop from scratch in TensorFlow ----------------------
LOOP = "keras_io_custom_loop.py"


@pytest.mark.multiprocess
def test_custom_loop_alone(tmp_path):
    work, record = dirs(tmp_path, "loop")
    run = run_alone(LOOP, work, record, env={"KERAS_DP_CPU_REPLICAS": "2"})
    assert run.output.count("Validation acc:") == 2
    assert list(run.weights()) == ["single"]


@pytest.mark.multiprocess
def test_custom_loop_two_workers(tmp_path):
    work, record = dirs(tmp_path, "loop2")
    run = run_launch(LOOP, work, record)
    assert run.output.count("Validation acc:") == 4
    assert_same_weights(run)
