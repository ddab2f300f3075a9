"""A full or read-only disk (issue 12, section 2): the previous backup survives, training goes on.

Real filesystems: a small tmpfs filled to the last byte, and one remounted
read-only (root ignores file permissions, so `chmod` would prove nothing).
Skipped, with the reason, where mounting is not permitted.
"""

import errno
import logging
import os
import subprocess

import keras
import pytest

from test_backup import Interrupt, diff, fit
from keras_dp.callbacks import BackupAndRestore, ModelCheckpoint
from keras_dp.callbacks._backup_store import BackupStore


@pytest.fixture
def disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): "
                    f"{result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(mount):
    """Writes a file until the filesystem is full."""
    fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def remount(mount, mode):
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True)


class At(keras.callbacks.Callback):
    """Calls `action()` after the n-th training step."""

    def __init__(self, step, action):
        super().__init__()
        self.step, self.action, self.seen = step, action, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            self.action()


@pytest.fixture(scope="module")
def uninterrupted(tf):
    return fit(tf, False)[0].get_weights()


def refused_warnings(caplog):
    return [r.getMessage() for r in caplog.records if "was NOT saved" in r.getMessage()]


@pytest.mark.parametrize("breakage", ["full", "read-only"])
def test_a_refused_backup_keeps_the_previous_one_and_training_goes_on(tf, disk, uninterrupted,
                                                                      caplog, breakage):
    directory = str(disk / "backup")
    if breakage == "full":
        breaks, mends = (lambda: fill(disk)), (lambda: os.remove(disk / "filler"))
    else:
        breaks, mends = (lambda: remount(disk, "ro")), (lambda: remount(disk, "rw"))
    # Backups every 2 steps: step 2 is written, then the disk refuses 4 and 6.
    with caplog.at_level(logging.WARNING, logger="keras_dp"):
        with pytest.raises(KeyboardInterrupt):
            fit(tf, False, [BackupAndRestore(directory, save_freq=2), At(3, breaks),
                            Interrupt(7)])
    warnings = refused_warnings(caplog)
    assert len(warnings) == 2, caplog.text  # one per refused backup, no traceback
    assert "the backup of step 4 was NOT saved" in warnings[0]
    assert "the backup of step 6 was NOT saved" in warnings[1]
    for text in warnings:
        assert f"could not write {directory}/ckpt-00000000" in text
        assert "free of" in text and "the previous backup (step 2) is intact" in text
    assert ("No space left" if breakage == "full" else "Read-only file system") in warnings[0]
    assert "the next backup is tried at step 6" in warnings[0]
    mends()
    choice = BackupStore(directory, is_chief=False).choose()
    assert choice.backup.step == 2 and choice.damaged == []  # intact, nothing half-written
    assert [b.name for b in BackupStore(directory, is_chief=False).list()] == [
        "ckpt-000000002-0"]
    model, _ = fit(tf, False, [BackupAndRestore(directory, save_freq=2)])
    assert diff(model.get_weights(), uninterrupted) <= 1e-5


def test_a_disk_that_frees_up_gets_the_next_backup(tf, disk, caplog):
    directory = str(disk / "backup")
    with caplog.at_level(logging.WARNING, logger="keras_dp"):
        with pytest.raises(KeyboardInterrupt):
            fit(tf, False, [BackupAndRestore(directory, save_freq=2), At(3, lambda: fill(disk)),
                            At(5, lambda: os.remove(disk / "filler")), Interrupt(7)])
    assert len(refused_warnings(caplog)) == 1  # step 4; step 6 is saved again
    assert BackupStore(directory, is_chief=False).choose().backup.step == 6


def test_a_model_checkpoint_the_disk_refuses_keeps_the_earlier_file(tf, disk, caplog):
    path = str(disk / "model.keras")
    with caplog.at_level(logging.WARNING, logger="keras_dp"):
        model, history = fit(tf, False, [ModelCheckpoint(path), At(6, lambda: fill(disk))])
    assert len(history.history["loss"]) == 3  # training went on
    warnings = [r.getMessage() for r in caplog.records if "could NOT save" in r.getMessage()]
    assert len(warnings) == 2 and path in warnings[0] and "free of" in warnings[0]
    os.remove(disk / "filler")
    assert keras.saving.load_model(path).count_params() == model.count_params()  # epoch 1
    assert [f for f in os.listdir(disk) if "tmp-" in f] == []


def test_the_jobs_final_save_on_a_full_disk_keeps_the_earlier_model(tf, disk):
    """keras-dp train's last write: a clear error, the earlier files whole, no traceback."""
    from keras_dp.data.tokenizer import ByteTokenizer
    from keras_dp.errors import ConfigError
    from keras_dp.train_config import TrainConfig
    from keras_dp.train_files import save as _save

    import _problem

    model = _problem.build_model()
    model.tokenizer = ByteTokenizer()
    context = type("Chief", (), {"is_chief": True})()
    config = TrainConfig(output_dir=str(disk / "out"))
    _save(model, config, context, {"step": 1})
    before, written = sorted(os.listdir(disk / "out")), model.get_weights()
    fill(disk)
    model.set_weights([w + 1 for w in written])
    with pytest.raises(ConfigError) as caught:
        _save(model, config, context, {"step": 2}, backup_dir="/x/backup")
    message = str(caught.value)
    assert f"could not save the trained model in {disk / 'out'}" in message
    assert "No space left" in message and "free of" in message
    assert "the backups in /x/backup are kept" in message
    os.remove(disk / "filler")
    assert sorted(os.listdir(disk / "out")) == before
    saved = keras.saving.load_model(str(disk / "out" / "model.keras"))
    assert diff(saved.get_weights(), written) == 0
