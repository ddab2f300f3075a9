"""Damaged backups (issue 12, section 1): named in one message, the next older one restored.

Each kind of damage a partial copy, a full disk or a bad sector leaves: the
final weights after falling back equal an uninterrupted run.
"""

import json
import logging
import os

import numpy as np
import pytest

from test_backup import STEPS, EPOCHS, Interrupt, diff, fit  # noqa: F401 - shared helpers
from keras_dp.callbacks import BackupAndRestore, latest_backup
from keras_dp.callbacks import _backup_verify
from keras_dp.callbacks._backup_store import BackupStore

NEWEST, OLDER = "ckpt-000000008-0", "ckpt-000000006-0"


@pytest.fixture(scope="module")
def uninterrupted(tf):
    return fit(tf, False)[0].get_weights()


def interrupted_run(tf, directory, keep=2):
    """Backups every 2 steps, interrupted after step 9: the last two are steps 6 and 8."""
    with pytest.raises(KeyboardInterrupt):
        fit(tf, False, [BackupAndRestore(directory, save_freq=2, keep=keep), Interrupt(9)])
    assert sorted(os.listdir(directory)) == ([OLDER, NEWEST, "latest"] if keep == 2
                                             else [NEWEST, "latest"])


def data_file(directory, name=NEWEST):
    (found,) = [f for f in os.listdir(os.path.join(directory, name)) if ".data-" in f]
    return os.path.join(directory, name, found)


def truncate(directory):
    path = data_file(directory)
    os.truncate(path, os.path.getsize(path) // 2)


def flip_bytes(directory, name=NEWEST):
    path = data_file(directory, name)
    with open(path, "r+b") as handle:
        data = bytearray(handle.read())
        for i in range(len(data) // 3, len(data) // 3 + 4):
            data[i] ^= 0x5A
        handle.seek(0)
        handle.write(bytes(data))


def delete_index(directory):
    os.remove(os.path.join(directory, NEWEST, "state.index"))


def delete_meta(directory):
    os.remove(os.path.join(directory, NEWEST, "meta.json"))


def edit_meta(directory):
    path = os.path.join(directory, NEWEST, "meta.json")
    meta = json.loads(open(path).read())
    meta["data_position"] += 1
    open(path, "w").write(json.dumps(meta))


def garble_meta(directory):
    path = os.path.join(directory, NEWEST, "meta.json")
    open(path, "r+b").write(b"\x00\xff")


def pointer_to_nothing(directory):
    import shutil

    shutil.rmtree(os.path.join(directory, NEWEST))


DAMAGE = {
    truncate: r"state\.data-00000-of-00001 is truncated \([\d,]+ bytes on disk, [\d,]+ bytes were",
    flip_bytes: r"state\.data-00000-of-00001 has changed bytes",
    delete_index: r"state\.index is missing",
    delete_meta: r"meta\.json is missing",
    edit_meta: r"meta\.json was changed after it was written",
    garble_meta: r"meta\.json is not valid JSON",
    pointer_to_nothing: r"the latest pointer names it but it does not exist",
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=lambda f: f.__name__)
def test_a_damaged_backup_is_named_and_the_older_one_restored(tf, tmp_path, uninterrupted,
                                                              damage, caplog):
    directory = str(tmp_path / "backup")
    interrupted_run(tf, directory)
    damage(directory)
    assert latest_backup(directory)["global_step"] == 6  # what the job reads first
    backup = BackupAndRestore(directory, save_freq=2)
    with caplog.at_level(logging.WARNING, logger="keras_dp"):
        model, history = fit(tf, False, [backup])
    messages = [r.getMessage() for r in caplog.records if "cannot use" in r.getMessage()]
    assert len(messages) == 1, caplog.text
    assert NEWEST in messages[0] and directory in messages[0]
    assert __import__("re").search(DAMAGE[damage], messages[0]), messages[0]
    assert f"restoring the older backup {OLDER} (step 6) instead" in messages[0]
    assert "Traceback" not in caplog.text
    assert diff(model.get_weights(), uninterrupted) <= 1e-5
    assert len(history.history["loss"]) < EPOCHS  # resumed, not started over


def test_with_every_backup_damaged_training_starts_over_and_says_so(tf, tmp_path,
                                                                    uninterrupted, caplog):
    directory = str(tmp_path / "backup")
    interrupted_run(tf, directory)
    truncate(directory)
    os.remove(os.path.join(directory, OLDER, "state.index"))
    assert latest_backup(directory) is None
    with caplog.at_level(logging.WARNING, logger="keras_dp"):
        model, history = fit(tf, False, [BackupAndRestore(directory, save_freq=2,
                                                          delete_checkpoint=False)])
    (message,) = [r.getMessage() for r in caplog.records if "cannot use" in r.getMessage()]
    assert NEWEST in message and OLDER in message
    assert "no usable backup is left, so training starts over from the beginning" in message
    assert diff(model.get_weights(), uninterrupted) <= 1e-5
    assert len(history.history["loss"]) == EPOCHS
    # The damaged ones were moved aside for a person to look at, out of the rotation.
    entries = sorted(os.listdir(directory))
    assert f"damaged-{NEWEST}" in entries and f"damaged-{OLDER}" in entries


def test_without_the_checks_a_damaged_backup_ends_the_run_or_goes_unnoticed(
        tf, tmp_path, uninterrupted, monkeypatch):
    """The fallback above comes from the checks: without them, TensorFlow's read fails
    (the run ends), or a changed meta.json is used silently (wrong weights)."""
    from keras_dp.callbacks import BackupError

    monkeypatch.setattr(_backup_verify, "problem", lambda directory, meta, prefix: None)
    directory = str(tmp_path / "flipped")
    interrupted_run(tf, directory)
    flip_bytes(directory)
    with pytest.raises(BackupError, match="Checksum does not match"):
        fit(tf, False, [BackupAndRestore(directory, save_freq=2)])
    directory = str(tmp_path / "edited")
    interrupted_run(tf, directory)
    edit_meta(directory)
    model, _ = fit(tf, False, [BackupAndRestore(directory, save_freq=2)])
    assert diff(model.get_weights(), uninterrupted) > 1e-4


def test_a_backup_written_before_the_manifest_is_checked_by_reading_it(tf, tmp_path,
                                                                       uninterrupted, caplog):
    directory = str(tmp_path / "backup")
    interrupted_run(tf, directory)
    for name in (NEWEST, OLDER):  # as an older keras_dp wrote them
        path = os.path.join(directory, name, "meta.json")
        meta = json.loads(open(path).read())
        del meta["files"], meta["checksum"]
        open(path, "w").write(json.dumps(meta))
    truncate(directory)
    with caplog.at_level(logging.WARNING, logger="keras_dp"):
        model, _ = fit(tf, False, [BackupAndRestore(directory, save_freq=2)])
    assert "TensorFlow cannot read its checkpoint" in caplog.text
    assert diff(model.get_weights(), uninterrupted) <= 1e-5


def test_keep_sets_how_many_backups_remain(tf, tmp_path):
    directory = str(tmp_path / "backup")
    interrupted_run(tf, directory, keep=1)
    with pytest.raises(KeyboardInterrupt):
        # 3 steps replayed (done before step 8's backup), then steps 9, 10, 11.
        fit(tf, False, [BackupAndRestore(directory, save_freq=1, keep=3), Interrupt(6)])
    # Steps 9, 10 (and 10 again at the epoch's end: that copy replaces the first), 11.
    steps = [b.step for b in BackupStore(directory, is_chief=False).list()]
    assert steps == [11, 10, 9]


@pytest.mark.parametrize("keep", [0, -1, 1.5, True, "2"])
def test_keep_is_checked(keep):
    from keras_dp.errors import ConfigError

    with pytest.raises(ConfigError, match="keep"):
        BackupAndRestore("/tmp/x", keep=keep)


def test_the_choice_depends_only_on_the_files(tf, tmp_path):
    """Every worker reading the same directory picks the same backup."""
    directory = str(tmp_path / "backup")
    interrupted_run(tf, directory)
    flip_bytes(directory)
    choices = [BackupStore(directory, is_chief=i == 0, worker_index=i).choose()
               for i in range(3)]
    assert {c.backup.name for c in choices} == {OLDER}
    assert all(c.damaged == choices[0].damaged for c in choices)
    assert np.all([c.backup.meta == choices[0].backup.meta for c in choices])


@pytest.mark.multiprocess
def test_the_job_falls_back_past_a_truncated_backup(tmp_path):
    """Issue 12's report: `keras-dp train` killed after a backup whose data file is then
    truncated died with `IndexError: Read less bytes than requested`; now it says so and
    resumes from the older backup, ending with the uninterrupted run's weights."""
    import subprocess
    import sys

    import keras

    import keras_dp.models  # noqa: F401 - registers TransformerLM for load_model
    from _multiproc import TESTS_DIR, base_env
    from test_train_cli import SMALL

    def job(*args):
        return subprocess.run([sys.executable, os.path.join(TESTS_DIR, "workers",
                                                            "job_worker.py"), *args],
                              env=base_env(), capture_output=True, text=True, timeout=300)

    reference, out = tmp_path / "reference", tmp_path / "out"
    done = job("--", "--steps", "6", "--output-dir", str(reference), "--no-backup", *SMALL)
    assert done.returncode == 0, done.stderr[-4000:]
    args = ["--", "--steps", "6", "--output-dir", str(out), "--backup-every", "2", *SMALL]
    killed = job("--signal", "5", "SIGKILL", "0", "0", *args)
    assert killed.returncode == -9, killed.stderr[-4000:]
    backups = str(out / "backup")
    newest, older = BackupStore(backups, is_chief=False).list()
    assert (newest.step, older.step) == (4, 2)
    path = data_file(backups, newest.name)
    os.truncate(path, os.path.getsize(path) // 2)
    done = job(*args)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.count("cannot use the backup") == 1
    assert f"{newest.name}: state.data-00000-of-00001 is truncated" in done.stderr
    assert f"restoring the older backup {older.name} (step 2) instead" in done.stderr
    assert "resuming the interrupted run from its backup at step 2" in done.stderr
    resumed = keras.saving.load_model(str(out / "model.keras"))
    uninterrupted = keras.saving.load_model(str(reference / "model.keras"))
    assert diff(resumed.get_weights(), uninterrupted.get_weights()) <= 1e-5
