"""`keras-dp train` end to end (small), `keras-dp generate`, resuming, flags, errors."""

import json
import os
import subprocess
import sys

import keras
import pytest

from _multiproc import base_env

SMALL = ["--d-model", "32", "--num-layers", "1", "--num-heads", "2", "--seq-len", "32",
         "--batch-size", "8", "--no-xla", "--val-steps", "2", "--sample-tokens", "24",
         "--progress", "plain", "--warmup-steps", "2"]


def keras_dp_cli(*args, timeout=300, cwd=None):
    return subprocess.run([sys.executable, "-m", "keras_dp", *args], env=base_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    result = keras_dp_cli("train", "--steps", "6", "--output-dir", str(out), *SMALL)
    assert result.returncode == 0, result.stderr[-4000:]
    return out, result


@pytest.mark.multiprocess
def test_train_end_to_end_reports_saves_and_samples(trained):
    out, result = trained
    report = result.stdout
    assert "validation loss" in report and "bits/byte" in report and "tokens/s" in report
    assert "sample:" in report and "Traceback" not in result.stderr
    assert "step 6/6" in result.stderr  # progress (chief)
    assert sorted(os.listdir(out)) == ["model.keras", "tokenizer.json", "train_state.json"]
    state = json.loads((out / "train_state.json").read_text())
    assert state["step"] == 6 and state["data"]["global_batch_size"] == 8
    import keras_dp.models

    model = keras.saving.load_model(str(out / "model.keras"), safe_mode=True)
    assert isinstance(model, keras_dp.models.TransformerLM) and model.seq_len == 32
    assert int(model.optimizer.iterations) == 6


@pytest.mark.multiprocess
def test_generate_prints_the_continuation(trained):
    out, _ = trained
    result = keras_dp_cli("generate", str(out), "The ", "--tokens", "30", "--seed", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("The ") and len(result.stdout) > 10


def test_generate_without_a_model_exits_2(tmp_path, capsys):
    from keras_dp.cli import main

    assert main(["generate", str(tmp_path / "nothing"), "x"]) == 2
    assert "no saved model" in capsys.readouterr().err


def test_resume_flag_is_refused_with_what_resumes_a_run(capsys):
    """One resume mechanism: the backups. `--resume` says so (exit 2, before TensorFlow)."""
    from keras_dp.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["train", "--resume"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--resume is gone" in err and "resumes from its backups" in err
    assert "run the same command again" in err


def test_every_train_config_field_is_a_flag_and_every_flag_a_field():
    import argparse
    import dataclasses

    from keras_dp.cli import train as train_cli
    from keras_dp.train import TrainConfig

    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    actions = sub.choices["train"]._actions
    dests = {a.dest for a in actions if a.dest != "help" and a.help != argparse.SUPPRESS}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert dests - set(train_cli.CLI_ONLY) == fields
    # ... with TrainConfig's defaults.
    assert train_cli.config_from_args(parser.parse_args(["train"])) == TrainConfig()
    args = parser.parse_args(["train", "--lr", "0.1", "--no-backup", "--mixed-precision", "bf16"])
    assert train_cli.config_from_args(args) == TrainConfig(
        learning_rate=0.1, backup=False, mixed_precision="mixed_bfloat16")


@pytest.mark.multiprocess
def test_train_missing_tfds_dataset_exits_2(tmp_path):
    result = keras_dp_cli("train", "--data", "tfds:tiny_shakespeare", "--data-dir",
                          str(tmp_path), "--steps", "1")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "tfds build tiny_shakespeare" in result.stderr and "Traceback" not in result.stderr


def job(args, timeout=300):
    """`keras-dp train` through tests/workers/job_worker.py (STEP lines, self-signals)."""
    from _multiproc import TESTS_DIR

    return subprocess.run([sys.executable, os.path.join(TESTS_DIR, "workers", "job_worker.py"),
                           *args], env=base_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.multiprocess
def test_a_killed_run_resumes_exactly_when_the_same_command_runs_again(trained, tmp_path):
    """SIGKILL after step 4 (backup at 3), then after step 6 = the last (backup at 6),
    then a run that only validates and saves: `trained`'s weights and history."""
    from keras_dp.callbacks import latest_backup

    out = tmp_path / "out"
    args = ["--", "--steps", "6", "--output-dir", str(out), "--backup-every", "3", "--json",
            *SMALL]
    killed = job(["--signal", "4", "SIGKILL", "0", "0", *args])
    assert killed.returncode == -9, killed.stderr[-4000:]
    assert latest_backup(out / "backup")["global_step"] == 3
    assert sorted(os.listdir(out)) == ["backup"]  # no model yet

    killed = job(["--signal", "6", "SIGKILL", "0", "0", *args])
    assert killed.returncode == -9, killed.stderr[-4000:]
    assert "resuming the interrupted run from its backup at step 3" in killed.stderr
    # The step replayed without training is not counted, shown or signalled.
    assert killed.stdout.split() == ["STEP", "4", "STEP", "5", "STEP", "6"], killed.stdout
    assert latest_backup(out / "backup")["global_step"] == 6

    done = job(args)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "resuming the interrupted run from its backup at step 6" in done.stderr
    assert "STEP" not in done.stdout and "step 6/6" in done.stderr
    report = json.loads(done.stdout[done.stdout.index("{\n"):])
    assert report["initial_step"] == 6 and report["steps"] == 6
    assert sorted(os.listdir(out)) == ["model.keras", "tokenizer.json", "train_state.json"]
    reference = json.loads((trained[0] / "train_state.json").read_text())["history"]
    for key in ("loss", "val_loss", "lr"):  # every validation, at the same steps
        assert report["history"][key] == pytest.approx(reference[key], rel=1e-6), key
    resumed = keras.saving.load_model(str(out / "model.keras"))
    uninterrupted = keras.saving.load_model(str(trained[0] / "model.keras"))
    diff = max(float(abs(a - b).max()) for a, b in zip(resumed.get_weights(),
                                                       uninterrupted.get_weights()))
    print(f"1 process, killed twice: max abs diff to the uninterrupted run {diff:.2e}")
    assert diff <= 1e-6
    assert int(resumed.optimizer.iterations) == 6


def test_a_backup_of_other_settings_is_refused(tmp_path):
    from keras_dp.callbacks._backup_store import BackupStore
    from keras_dp.errors import ConfigError
    from keras_dp.train_config import TrainConfig
    from keras_dp.train_files import backup_dir_of, backup_point as _backup_point

    config = TrainConfig(output_dir=str(tmp_path))
    directory = backup_dir_of(config)
    assert directory == str(tmp_path / "backup")
    assert backup_dir_of(TrainConfig(backup=False)) is None
    data = {"source": "x", "seq_len": 8, "global_batch_size": 4, "seed": 0}
    meta = {"global_step": 5, "metadata": {"job": {"first_step": 2, "every": 3, "data": data},
                                           "history": {"loss": [1.0]}}}
    # A backup has checkpoint files (their sizes and checksums are checked on restore).
    BackupStore(directory, is_chief=True).save(5, lambda prefix: open(prefix + ".index",
                                                                      "w").close(), meta)
    assert _backup_point(directory, data, 9) == {
        "step": 7, "first_step": 2, "every": 3, "history": {"loss": [1.0]},
        "num_workers": None}   # a backup that does not say how many workers wrote it
    assert _backup_point(directory, data, 7)["step"] == 7  # only validate and save
    with pytest.raises(ConfigError, match=r"already trained 7 steps.*Received: steps=6"):
        _backup_point(directory, data, 6)
    with pytest.raises(ConfigError, match="used other data settings"):
        _backup_point(directory, dict(data, seed=1), 9)
    BackupStore(directory, is_chief=True).save(6, lambda prefix: open(prefix + ".index",
                                                                      "w").close(),
                                               {"global_step": 6})
    with pytest.raises(ConfigError, match="keras-dp train did not write"):
        _backup_point(directory, data, 9)


class _Extended:
    def __init__(self, devices):
        self.worker_devices = devices


class _Strategy:
    def __init__(self, devices, replicas):
        self.extended = _Extended(devices)
        self.num_replicas_in_sync = replicas


CPU2 = tuple(f"/job:localhost/replica:0/task:0/device:CPU:{i}" for i in range(2))
GPU2 = tuple(f"/job:localhost/replica:0/task:0/device:GPU:{i}" for i in range(2))
WORKER_CPU = ("/job:worker/replica:0/task:1/device:CPU:0",)


@pytest.mark.parametrize("requested, devices, replicas, part, expected", [
    (None, ("/job:localhost/replica:0/task:0/device:CPU:0",), 1, False, True),
    (None, CPU2, 2, True, True),             # keras_fix's replica_xla: per-replica XLA
    (None, WORKER_CPU, 2, True, True),       # 2 workers, one CPU each
    (True, CPU2, 2, True, True),
    (None, CPU2, 2, False, False),           # the part switched off: TF cannot compile it
    (None, WORKER_CPU, 2, False, False),
    (None, GPU2, 2, False, True),
    (False, ("/job:localhost/replica:0/task:0/device:CPU:0",), 1, True, False),
    (False, CPU2, 2, True, False),
    (True, GPU2, 2, False, True),
])
def test_xla_is_decided_by_the_replicas_devices(monkeypatch, requested, devices, replicas,
                                                part, expected):
    from keras_dp import keras_fix
    from keras_dp.xla import use_xla

    monkeypatch.setattr(keras_fix, "is_applied", lambda name=None: part)
    assert use_xla(requested, _Strategy(devices, replicas), whole_step=True) is expected
    # keras_dp.train_step compiles each replica's pass alone: XLA wherever asked.
    assert use_xla(requested, _Strategy(devices, replicas), whole_step=False) is (
        requested is not False)


def test_xla_asked_for_on_several_cpu_replicas_without_the_part_is_a_config_error(
        monkeypatch):
    from keras_dp import keras_fix
    from keras_dp.errors import ConfigError
    from keras_dp.xla import use_xla

    monkeypatch.setattr(keras_fix, "is_applied", lambda name=None: False)
    with pytest.raises(ConfigError, match=r"replica_xla.*--no-xla.*Received: xla=True"):
        use_xla(True, _Strategy(CPU2, 2), whole_step=True)
