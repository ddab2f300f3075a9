"""`keras-dp train` under two workers (real processes): data-parallel, chief-only output."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _multiproc import base_env, run_workers

pytestmark = pytest.mark.multiprocess


def test_two_workers_train_with_the_same_command(tmp_path):
    args = ["--steps", "4", "--output-dir", "out", "--d-model", "32", "--num-layers", "1",
            "--num-heads", "2", "--seq-len", "32", "--batch-size", "4", "--no-xla",
            "--val-steps", "2", "--sample-tokens", "16", "--progress", "plain",
            "--warmup-steps", "1", "--json"]
    results = run_workers("train_worker.py", 2, [str(tmp_path), *args], timeout=300)
    for result in results:
        result.check()
    chief, other = results
    report = json.loads(chief.output[chief.output.index("{\n"):chief.output.rindex("}") + 1])
    assert report["num_workers"] == 2 and report["num_replicas"] == 2
    assert report["global_batch_size"] == 8 and report["steps"] == 4
    assert report["val_loss"] is not None and report["sample"] is not None
    assert report["tokens_per_sec"] > 0
    # Only the chief shows progress, reports and writes the output directory.
    assert "step 4/4" in chief.output and "MultiWorkerMirroredStrategy" in chief.output
    assert "step 4/4" not in other.output and '"val_loss"' not in other.output
    assert sorted(os.listdir(tmp_path / "w0" / "out")) == [
        "model.keras", "tokenizer.json", "train_state.json"]
    assert not (tmp_path / "w1" / "out").exists()

    # One process with the same global batch sees the same batches (the data
    # rule) from the same initial weights: the first step's loss is the same;
    # later ones agree to what Adam makes of all-reduce rounding (its first
    # updates are ~lr * sign(g), so gradients at rounding level flip; with SGD
    # the foundation's tests show exact equivalence).
    single = subprocess.run(
        [sys.executable, "-m", "keras_dp", "train", *args[:args.index("--batch-size")],
         "--global-batch-size", "8", *args[args.index("--batch-size") + 2:]],
        cwd=tmp_path, env=base_env(), capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    alone = json.loads(single.stdout)
    assert alone["num_workers"] == 1 and alone["global_batch_size"] == 8
    np.testing.assert_allclose(report["history"]["loss"][0], alone["history"]["loss"][0],
                               rtol=1e-6)
    np.testing.assert_allclose(report["history"]["loss"], alone["history"]["loss"], rtol=1e-3)
    np.testing.assert_allclose(report["val_loss"], alone["val_loss"], rtol=1e-3)
