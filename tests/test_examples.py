"""The examples run: examples/train_lm.py, examples/custom_model.py, examples/by_hand/.

Each example runs as a user would run it (a subprocess, alone or under
`keras-dp launch -n 2`) with a few steps, and the test checks what it
promises: training through the strategy keras_dp picked, files written by
the chief only, and for train_lm.py that two workers compute what one
process with the same global batch computes.
"""

import ast
import importlib.util
import io
import os
import re
import subprocess
import sys
import tokenize

import pytest

from _multiproc import ROOT, base_env

EXAMPLES = os.path.join(ROOT, "examples")
TRAIN_LM = os.path.join(EXAMPLES, "train_lm.py")
BY_HAND = os.path.join(EXAMPLES, "by_hand", "train_lm.py")
CUSTOM_MODEL = os.path.join(EXAMPLES, "custom_model.py")
# A few steps of the tiny LM: per-replica batch 4, 64 bytes per sequence, no XLA.
LM_ARGS = ["--steps", "4", "--batch-size", "4", "--seq-len", "64", "--no-xla"]
FINAL = re.compile(r"final loss ([\d.]+), validation loss ([\d.]+) nats/byte")


def run(args, cwd, env=None, timeout=300):
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=base_env(env),
                          capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"exit {done.returncode}:\n{output[-6000:]}"
    return output


def launch(args, cwd, timeout=300):
    return run(["-m", "keras_dp", "launch", "-n", "2", *args], cwd, timeout=timeout)


def final_losses(output):
    found = FINAL.findall(output)
    assert len(found) == 1, output[-4000:]  # printed by the chief only
    return tuple(float(v) for v in found[0])


@pytest.fixture(scope="module")
def lm_one_process(tmp_path_factory):
    """examples/train_lm.py in one process with 2 logical CPU replicas (global batch 8)."""
    work = tmp_path_factory.mktemp("train_lm_one")
    output = run([TRAIN_LM, *LM_ARGS, "--output-dir", "out"], work,
                 env={"KERAS_DP_CPU_REPLICAS": "2"})
    return work, output


@pytest.mark.multiprocess
def test_train_lm_one_process(tf, lm_one_process):
    work, output = lm_one_process
    assert "MirroredStrategy: 2 replica(s), 1 worker(s)" in output
    assert "global batch 8" in output
    train_loss, val_loss = final_losses(output)
    # Starts at ln(256) = 5.55 nats; 4 steps at a high learning rate go well below.
    assert val_loss < 5.2 and train_loss < 5.2
    sample = output.rsplit(f"{val_loss:.6f} nats/byte\n", 1)[1]
    assert sample.startswith("The ") and len(sample.encode("utf-8", "replace")) > 100
    assert sorted(os.listdir(work / "out")) == ["model.keras"]

    import keras

    import keras_dp.models  # noqa: F401  (registers the LM)

    model = keras.saving.load_model(str(work / "out" / "model.keras"), safe_mode=True)
    assert model.seq_len == 64 and len(model.generate("The ", 5, greedy=True)) > 0


@pytest.mark.multiprocess
def test_train_lm_two_workers_equal_one_process(lm_one_process, tmp_path):
    """`keras-dp launch -n 2` runs the unchanged script as 2 workers, with the same result."""
    _, one = lm_one_process
    output = launch([TRAIN_LM, *LM_ARGS, "--output-dir", "out"], tmp_path)
    assert "MultiWorkerMirroredStrategy: 2 replica(s), 2 worker(s)" in output
    assert "[worker 0] final loss" in output  # the chief prints, the other worker does not
    # Global batch 8 either way (2 replicas in one process, or 2 workers of 1):
    # the same batches, initial weights and updates, so the same losses.
    assert final_losses(output) == pytest.approx(final_losses(one), abs=2e-5)
    assert sorted(os.listdir(tmp_path / "out")) == ["model.keras"]


@pytest.mark.multiprocess
def test_by_hand_version_runs_with_two_workers(tmp_path):
    """The hand-written tf.distribute equivalent works too, so the comparison is fair."""
    output = launch([BY_HAND, *LM_ARGS, "--output-dir", "out"], tmp_path)
    assert "2 replica(s), 2 worker(s); global batch 8" in output
    train_loss, val_loss = final_losses(output)
    assert val_loss < 5.2 and train_loss < 5.2
    assert sorted(os.listdir(tmp_path / "out")) == ["model.keras"]


@pytest.mark.multiprocess
def test_custom_model_two_workers(tmp_path):
    output = launch([CUSTOM_MODEL, "--epochs", "2", "--steps-per-epoch", "10", "--no-xla",
                     "--data-dir", "data", "--output-dir", "out"], tmp_path)
    for worker in (0, 1):
        assert (f"worker {worker} of 2: 2 replica(s) in all, global batch 64 (32 per "
                f"replica); reading 4 of the 8 shapes16 train files") in output
    final = re.search(r"final: loss ([\d.]+), accuracy ([\d.]+), val_accuracy ([\d.]+)",
                      output)
    assert final, output[-4000:]
    assert float(final.group(3)) > 0.4  # four classes: chance is 0.25
    # Chief-only writers: one model, one CSV log; the backups are removed after success.
    assert sorted(os.listdir(tmp_path / "out")) == ["log.csv", "model.keras"]
    rows = (tmp_path / "out" / "log.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 3 and {"accuracy", "val_accuracy", "examples_per_sec"} <= set(header)
    speed = float(rows[-1].split(",")[header.index("examples_per_sec")])
    assert speed > 0


def _load_example(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("shards, pipelines", [(4, 2), (4, 3), (1, 2)])
def test_custom_model_pipelines_read_disjoint_shares(tf, tmp_path, shards, pipelines):
    """Each worker's pipeline of custom_model.py reads its own examples, together all."""
    import tensorflow_datasets as tfds

    example = _load_example(CUSTOM_MODEL, "custom_model_example")
    example.write_shapes16(str(tmp_path), train_examples=96, val_examples=8, shards=shards)
    builder = tfds.builder("shapes16", data_dir=str(tmp_path))
    seen = []
    for index in range(pipelines):
        context = tf.distribute.InputContext(pipelines, index, pipelines)
        images = example.read_split(builder, "train", context, training=False)
        seen.append({image.tobytes() for image, _ in tfds.as_numpy(images)})
    assert sum(len(s) for s in seen) == len(set().union(*seen)) == 96
    assert all(seen)


def code_lines(path):
    """Lines holding code: no blank lines, comments or docstrings."""
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body \
                and isinstance(node.body[0], ast.Expr) \
                and isinstance(getattr(node.body[0], "value", None), ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            docstrings.update(range(node.body[0].lineno, node.body[0].end_lineno + 1))
    lines = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                              tokenize.DEDENT, tokenize.ENDMARKER):
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


def test_keras_dp_script_is_less_than_half_the_hand_written_one():
    """docs/examples.md: train_lm.py has less than half the code lines of its by-hand twin."""
    ours, theirs = code_lines(TRAIN_LM), code_lines(BY_HAND)
    assert 0 < 2 * ours < theirs, f"examples/train_lm.py {ours} lines, by_hand {theirs}"
