"""Custom training loops in real worker processes: 2 workers on 127.0.0.1, and mpirun -np 2."""

import json
import os
import shutil
import signal
import subprocess

import numpy as np
import pytest

import _loop_problem as lp
import _problem
from _multiproc import ROOT, base_env, run_workers

pytestmark = pytest.mark.multiprocess

RECIPES = ("tape", "plain", "train_step", "reduce_then_apply", "naive")


@pytest.fixture(scope="module")
def reference(tf):
    """model.fit on one device with the global batch."""
    _, weights = _problem.train(tf.distribute.get_strategy())
    return weights


def load(directory, name, worker):
    return list(np.load(os.path.join(directory, f"weights_{name}_{worker}.npz")).values())


def test_two_workers_custom_loops_match_one_device_and_catch_mistakes(tmp_path, reference):
    for result in run_workers("loop_worker.py", 2, [str(tmp_path)], timeout=300):
        result.check()
    r0, r1 = (json.loads((tmp_path / f"result_{w}.json").read_text()) for w in (0, 1))
    weights = {name: [load(tmp_path, name, w) for w in (0, 1)] for name in RECIPES}

    # The GradientTape loop (on _problem's slices and on a plain dataset that
    # ctx.distribute shards per worker), train_step, and gradients reduced by
    # hand then applied: the same weights on both workers and as model.fit.
    for name in ("tape", "plain", "train_step", "reduce_then_apply"):
        w0, w1 = weights[name]
        assert lp.max_diff(w0, w1) == 0.0, name
        assert lp.max_diff(w0, reference) <= 1e-5, name
    assert r0["checks_installed"] and r0["tape_losses"] == r1["tape_losses"]
    assert r0["train_step_logs"] == r1["train_step_logs"]

    # The naive recipe (local gradients / workers, no all-reduce) is stopped,
    # eagerly and inside a tf.function ...
    for result in (r0, r1):
        assert result["naive_error"].startswith(
            "optimizer.apply_gradients() was called outside the replica context of a "
            "2-worker strategy, with gradients that differ between workers")
        assert "ctx.run(step_fn, batch)" in result["naive_error"]
        assert "outside the replica context" in result["naive_compiled_error"]
    # ... and, unchecked, drifts apart: the divergence the README quotes.
    n0, n1 = weights["naive"]
    between_workers = lp.max_diff(n0, n1)
    from_correct = max(lp.max_diff(n0, reference), lp.max_diff(n1, reference))
    print(f"naive recipe after {_problem.STEPS} steps: workers differ by {between_workers:.3f}, "
          f"correct weights by {from_correct:.3f} (max abs)")
    assert between_workers > 0.05 and from_correct > 0.05

    # Data: sharded pipelines pass silently; an unsharded one warns on both workers.
    assert r0["tape_warnings"] == r0["plain_warnings"] == []
    for result in (r0, r1):
        assert len(result["unsharded_warnings"]) == 1
        assert result["unsharded_warnings"][0].startswith("every worker received the same batch")
    # A metric updated with 1 on worker 0 and 2 on worker 1 reads 1.5 on both.
    assert r0["metric"] == r1["metric"] == 1.5


MPIRUN = shutil.which("mpirun")
LOOPBACK = ["--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", "lo",
            "--mca", "oob_tcp_if_include", "lo"]


@pytest.mark.skipif(MPIRUN is None, reason="mpirun is not installed (apt-get install "
                                           "openmpi-bin; .ci/run installs it)")
def test_example_under_mpirun_on_loopback(tmp_path):
    """`mpirun -np 2 python examples/custom_loop.py` (the Transformer LM on the builtin
    corpus, made small): the ranks exchange free ports through MPI and end with identical
    weights."""
    env = base_env({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                    "OMPI_MCA_rmaps_base_oversubscribe": "1"})
    command = [MPIRUN, "-np", "2", "--bind-to", "none", *LOOPBACK, os.sys.executable,
               os.path.join(ROOT, "examples", "custom_loop.py"), "--steps", "6",
               "--log-every", "3", "--seq-len", "16", "--d-model", "32", "--num-layers", "1",
               "--per-replica-batch", "4", "--sample-tokens", "8", "--save-weights",
               str(tmp_path)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"mpirun did not finish in 300 s:\n{output[-4000:]}")
    assert process.returncode == 0, output[-6000:]

    results = [json.loads((tmp_path / f"result_{w}.json").read_text()) for w in (0, 1)]
    w0, w1 = (list(np.load(tmp_path / f"weights_{w}.npz").values()) for w in (0, 1))
    assert lp.max_diff(w0, w1) == 0.0
    assert results[0]["loss"] == results[1]["loss"] and np.isfinite(results[0]["loss"])
    for worker, result in enumerate(results):
        assert result["source"] == "mpi" and result["worker"] == worker
        assert result["kind"] == "multi_worker_mirrored" and result["replicas"] == 2
        assert any("exchanged through MPI" in note for note in result["notes"])
    addresses = results[0]["addresses"]
    assert addresses == results[1]["addresses"] and len(set(addresses)) == 2
    assert all(a.startswith("127.0.0.1:") for a in addresses)
    assert "step 6: loss" in output and "sample: The " in output
    # The LM's weights: token table [256, 32], positions [16, 32], one block.
    assert w0[0].shape == (256, 32) and w0[1].shape == (16, 32)
