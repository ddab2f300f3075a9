"""`keras-dp train` under two workers (real processes): data-parallel, chief-only output."""

import json
import os

import pytest

from _multiproc import run_workers

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
