"""`keras-dp train` end to end (small), `keras-dp generate`, `--resume`, errors."""

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


def test_generate_prints_the_continuation(trained):
    out, _ = trained
    result = keras_dp_cli("generate", str(out), "The ", "--tokens", "30", "--seed", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("The ") and len(result.stdout) > 10


def test_generate_without_a_model_exits_2(tmp_path, capsys):
    from keras_dp.cli import main

    assert main(["generate", str(tmp_path / "nothing"), "x"]) == 2
    assert "no saved model" in capsys.readouterr().err


def test_resume_continues_from_the_saved_state(trained, tmp_path):
    out, _ = trained
    copy = tmp_path / "out"
    copy.mkdir()
    for name in os.listdir(out):
        (copy / name).write_bytes((out / name).read_bytes())
    result = keras_dp_cli("train", "--steps", "9", "--output-dir", str(copy), "--resume",
                          "--json", *SMALL)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)
    assert report["initial_step"] == 6 and report["steps"] == 9
    state = json.loads((copy / "train_state.json").read_text())
    assert state["step"] == 9
    model = keras.saving.load_model(str(copy / "model.keras"))
    assert int(model.optimizer.iterations) == 9
    # Other data settings cannot continue the same batches: refused.
    from keras_dp.errors import ConfigError
    from keras_dp.train import TrainConfig, _resume_point

    with pytest.raises(ConfigError, match="resuming needs the same data"):
        _resume_point(TrainConfig(output_dir=str(copy), resume=True),
                      dict(state["data"], seed=5))
    assert _resume_point(TrainConfig(output_dir=str(tmp_path / "new")), {}) is None


def test_train_missing_tfds_dataset_exits_2(tmp_path):
    result = keras_dp_cli("train", "--data", "tfds:tiny_shakespeare", "--data-dir",
                          str(tmp_path), "--steps", "1")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "tfds build tiny_shakespeare" in result.stderr and "Traceback" not in result.stderr
