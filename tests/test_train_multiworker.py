"""`keras-dp train` under two workers (real processes): data-parallel, chief-only output,
and nothing lost when a worker is killed or preempted.

`uninterrupted` is one 2-worker run of the job (workers in their own folders, so
what each wrote is visible); the fault-tolerance test interrupts the same command
twice and must end with its weights.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from _launch import LaunchRun
from _multiproc import TESTS_DIR, base_env, run_workers

pytestmark = pytest.mark.multiprocess

JOB_WORKER = os.path.join(TESTS_DIR, "workers", "job_worker.py")
ARGS = ["--steps", "8", "--backup-every", "3", "--d-model", "32", "--num-layers", "1",
        "--num-heads", "2", "--seq-len", "32", "--batch-size", "4", "--no-xla",
        "--val-steps", "2", "--progress", "plain", "--warmup-steps", "1", "--json"]


def report_of(output):
    return json.loads(output[output.index("{\n"):output.rindex("}") + 1])


def worker_output(text, index):
    """What worker `index` printed, from `keras-dp launch`'s prefixed output."""
    prefix = f"[worker {index}] "
    return "\n".join(line[len(prefix):] for line in text.splitlines()
                     if line.startswith(prefix))


def files_of(output):
    return json.loads(re.search(r"^(?:\[worker \d\] )?FILES (.*)$", output, re.M).group(1))


def weights(output_dir):
    import keras

    import keras_dp.models  # noqa: F401 - registers TransformerLM

    return keras.saving.load_model(os.path.join(output_dir, "model.keras")).get_weights()


def max_diff(a, b):
    assert len(a) == len(b)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    base = tmp_path_factory.mktemp("two_workers")
    # XLA left to the job (no --no-xla): on, each worker's forward and backward
    # pass compiled (keras_fix's replica_xla), the all-reduce outside XLA.
    auto_xla = [arg for arg in ARGS if arg != "--no-xla"]
    results = run_workers("job_worker.py", 2, ["--chdir", str(base), "--", "--output-dir",
                                               "out", "--sample-tokens", "16", *auto_xla],
                          timeout=300)
    for result in results:
        result.check()
    return base, results


def test_two_workers_train_with_the_same_command(uninterrupted, tmp_path):
    base, (chief, other) = uninterrupted
    report = report_of(chief.output)
    assert report["num_workers"] == 2 and report["num_replicas"] == 2
    assert report["global_batch_size"] == 8 and report["steps"] == 8
    assert report["val_loss"] is not None and report["sample"] is not None
    assert report["tokens_per_sec"] > 0
    # Only the chief shows progress, reports and writes the output directory,
    # backups included (they existed when training ended, deleted once the model
    # was saved); the other worker wrote nothing in its folder.
    assert "step 8/8" in chief.output and "MultiWorkerMirroredStrategy" in chief.output
    assert "; XLA" in chief.output and "no XLA" not in chief.output
    assert "step 8/8" not in other.output and '"val_loss"' not in other.output
    assert "out/backup/latest" in files_of(chief.output)
    assert files_of(other.output) == []
    assert sorted(os.listdir(base / "w0" / "out")) == [
        "model.keras", "tokenizer.json", "train_state.json"]
    assert os.listdir(base / "w1") == []

    # One process with the same global batch sees the same batches (the data
    # rule) from the same initial weights, and AdamW (with keras_fix's
    # sparse_gradients: the embeddings' gradients are IndexedSlices) updates
    # them as one device does: the losses agree to float rounding.
    args = ARGS[:ARGS.index("--batch-size")] + ["--global-batch-size", "8"] + \
        ARGS[ARGS.index("--batch-size") + 2:]
    single = subprocess.run(
        [sys.executable, "-m", "keras_dp", "train", "--output-dir", "out",
         "--sample-tokens", "0", *args],
        cwd=tmp_path, env=base_env(), capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    alone = json.loads(single.stdout)
    assert alone["num_workers"] == 1 and alone["global_batch_size"] == 8
    np.testing.assert_allclose(report["history"]["loss"], alone["history"]["loss"], rtol=1e-5)
    np.testing.assert_allclose(report["history"]["val_loss"], alone["history"]["val_loss"],
                               rtol=1e-5)


def test_a_killed_worker_then_a_preemption_lose_nothing(tf, uninterrupted, tmp_path):
    """SIGKILL of worker 1 after step 4 (backup at 3): `--max-restarts 1` resumes; in the
    restart, SIGTERM to worker 1 after step 5: both save at a common step and exit 75;
    the same command again finishes. The weights are the uninterrupted run's."""
    base, (chief, _) = uninterrupted
    out = tmp_path / "out"
    command = [JOB_WORKER, "--chdir", str(tmp_path), "--signal", "4", "SIGKILL", "1", "0",
               "--signal", "5", "SIGTERM", "1", "1", "--", "--output-dir", str(out),
               "--sample-tokens", "0", *ARGS]
    first = LaunchRun(["-n", "2", "--max-restarts", "1", *command])
    code = first.finish(300)
    text = first.text()
    assert code == 75, text[-6000:]
    assert re.search(r"worker 1 .* failed first: killed by SIGKILL", text), text[-6000:]
    assert "restarting all 2 workers on new ports (restart 1 of 1)" in text
    assert "resuming the interrupted run from its backup at step 3" in text
    stop = int(re.search(r"worker 1 received SIGTERM: all 2 workers save a backup after "
                         r"step (\d+) and stop", text).group(1))
    assert re.search(r"worker 0 ended after .*: exit code 75", text), text[-6000:]
    latest = json.loads((out / "backup" / "latest").read_text())["name"]
    meta = json.loads((out / "backup" / latest / "meta.json").read_text())
    assert meta["reason"] == "preemption" and meta["global_step"] == stop
    assert not (out / "model.keras").exists()

    again = LaunchRun(["-n", "2", *command])
    assert again.finish(300) == 0, again.text()[-6000:]
    text = again.text()
    assert f"resuming the interrupted run from its backup at step {stop}" in text
    # Steps done before the backup are neither counted nor shown again.
    chief_text = worker_output(text, 0)
    assert re.findall(r"^STEP (\d+)", chief_text, re.M) == [
        str(s) for s in range(stop + 1, 9)], text[-4000:]
    diff = max_diff(weights(out), weights(base / "w0" / "out"))
    print(f"2 workers, SIGKILL at step 4 + SIGTERM at step {stop}: max abs diff to the "
          f"uninterrupted run {diff:.2e}")
    assert diff <= 1e-5
    resumed, reference = report_of(chief_text), report_of(chief.output)
    assert resumed["steps"] == 8 and resumed["initial_step"] == stop
    for key in ("loss", "val_loss"):  # every validation, at the same steps
        np.testing.assert_allclose(resumed["history"][key], reference["history"][key],
                                   rtol=1e-5)
    assert not (out / "backup").exists()  # deleted once the final model was saved


# -- resizing: the same run continued on another number of workers ------------------
# The global batch fixes the batches (keras_dp.data's rule), so a run killed on 2
# workers continues on 1 process (1 or 2 replicas), and one killed on 1 process
# continues on 2 workers, along the uninterrupted trajectory. The bound is the
# 1e-5 of every resume test: after 8 steps, 1 vs 2 replicas differ by the order
# in which the batch's gradient terms are summed, about 1e-7 here (measured
# over 60 steps of the default job: benchmarks/resize_check.py, RESULTS.md).
RESIZED = ARGS[:ARGS.index("--batch-size")] + ["--global-batch-size", "8"] + \
    ARGS[ARGS.index("--batch-size") + 2:]


def job_command(out, *extra, signal_spec=()):
    return [JOB_WORKER, *signal_spec, "--", "--output-dir", str(out), "--sample-tokens", "0",
            *RESIZED, *extra]


def one_process(out, *extra, signal_spec=()):
    return subprocess.run([sys.executable, *job_command(out, *extra, signal_spec=signal_spec)],
                          env=base_env(), capture_output=True, text=True, timeout=300)


def check_resized(text, report, out, uninterrupted, *, workers, replicas, was):
    base, (chief, _) = uninterrupted
    assert "resuming the interrupted run from its backup at step 3" in text, text[-6000:]
    assert (f"the backup was written by {was} worker(s), this run has {workers} "
            f"({replicas} replica(s)): the same global batch 8") in text, text[-6000:]
    resumed, reference = report, report_of(chief.output)
    assert (resumed["num_workers"], resumed["num_replicas"]) == (workers, replicas)
    assert resumed["initial_step"] == 3 and resumed["steps"] == 8
    diff = max_diff(weights(out), weights(base / "w0" / "out"))
    print(f"{was} worker(s) -> {workers} worker(s) x {replicas} replica(s) at step 3: max abs "
          f"diff to the uninterrupted 2-worker run {diff:.2e}")
    assert diff <= 1e-5
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(resumed["history"][key], reference["history"][key],
                                   rtol=1e-5)


@pytest.fixture(scope="module")
def killed_on_two_workers(tmp_path_factory):
    """2 workers, worker 1 SIGKILLed after step 4; the latest backup is step 3's."""
    out = tmp_path_factory.mktemp("killed_on_two") / "out"
    run = LaunchRun(["-n", "2", *job_command(out, signal_spec=["--signal", "4", "SIGKILL",
                                                                "1", "0"])])
    code = run.finish(300)
    assert code != 0 and re.search(r"worker 1 .* failed first: killed by SIGKILL",
                                   run.text()), run.text()[-6000:]
    assert json.loads((out / "backup" / "latest").read_text())["name"].startswith(
        "ckpt-000000003")
    return out


@pytest.mark.parametrize("replicas", [1, 2], ids=["1-replica", "2-cpu-replicas"])
def test_two_workers_continued_by_one_process(uninterrupted, killed_on_two_workers, tmp_path,
                                              replicas):
    out = tmp_path / "out"
    shutil.copytree(killed_on_two_workers, out)
    done = one_process(out, *(["--cpu-replicas", "2"] if replicas == 2 else []))
    assert done.returncode == 0, done.stderr[-6000:]
    check_resized(done.stderr, report_of(done.stdout), out, uninterrupted, workers=1,
                  replicas=replicas, was=2)


def test_one_process_continued_by_two_workers(uninterrupted, tmp_path):
    out = tmp_path / "out"
    killed = one_process(out, signal_spec=["--signal", "4", "SIGKILL", "0", "0"])
    assert killed.returncode == -9, killed.stderr[-6000:]
    run = LaunchRun(["-n", "2", *job_command(out)])
    assert run.finish(300) == 0, run.text()[-6000:]
    chief = worker_output(run.text(), 0)
    check_resized(chief, report_of(chief), out, uninterrupted, workers=2, replicas=2, was=1)


def test_another_global_batch_is_refused(killed_on_two_workers, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(killed_on_two_workers, out)
    # --batch-size 4 on one process is a global batch of 4, not the run's 8.
    refused = subprocess.run(
        [sys.executable, "-m", "keras_dp", "train", "--output-dir", str(out),
         "--sample-tokens", "0", *ARGS], env=base_env(), capture_output=True, text=True,
        timeout=300)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr
    assert (f"the interrupted run backed up in {out}/backup used other data settings"
            in refused.stderr)
    assert ("continuing needs the same data, seq_len, global batch and seed. Fix: to "
            "continue it on another number of workers or replicas, keep its global batch: "
            "pass --global-batch-size 8") in refused.stderr


# The same with a user's fit (keras_dp.data at a fixed global batch +
# BackupAndRestore replaying the data position): 2 workers killed after step 5
# (backup at 3) are continued by one process; the reference is one process.
FIT_WORKER = os.path.join(TESTS_DIR, "workers", "elastic_fit_worker.py")


def fit_result(text):
    return json.loads(re.search(r"^(?:\[worker 0\] )?RESULT (.*)$", text, re.M).group(1))


def test_a_users_fit_killed_on_two_workers_continues_on_one_process(tmp_path):
    alone = subprocess.run([sys.executable, FIT_WORKER, str(tmp_path / "alone")],
                           env=base_env(), capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr[-6000:]
    out = tmp_path / "resized"
    run = LaunchRun(["-n", "2", FIT_WORKER, str(out), "--kill-at", "5", "--kill-worker", "1"])
    assert run.finish(300) != 0 and (out / "backup").exists(), run.text()[-6000:]
    done = subprocess.run([sys.executable, FIT_WORKER, str(out)], env=base_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-6000:]
    assert "restored the backup of step 3 (epoch 1, step 3 of it)" in done.stderr
    assert re.findall(r"^STEP (\d+)", done.stdout, re.M) == [str(s) for s in range(4, 9)]
    reference = list(np.load(tmp_path / "alone" / "weights.npz").values())
    diff = max_diff(list(np.load(out / "weights.npz").values()), reference)
    print(f"fit: 2 workers -> 1 process at step 3: max abs diff {diff:.2e}")
    assert diff <= 1e-5
    assert fit_result(done.stdout)["workers"] == 1
    np.testing.assert_allclose(fit_result(done.stdout)["loss"],
                               fit_result(alone.stdout)["loss"], rtol=1e-5)
