"""keras_dp.callbacks in one process: exact resume, atomic backups, chief-only writing.

The multi-worker runs (2 processes, kills, SIGTERM) are in test_fault_tolerance.py.
"""

import inspect
import json
import os
import signal

import keras
import numpy as np
import pytest

import _problem
from keras_dp.callbacks import (BackupAndRestore, BackupError, CSVLogger, ModelCheckpoint,
                                Progress, TensorBoard, Throughput, is_replayed_step,
                                latest_backup)
from keras_dp.callbacks import backup as backup_module
from keras_dp.callbacks import checkpoint as checkpoint_module
from keras_dp.callbacks._backup_store import BackupStore
from keras_dp.errors import ConfigError
from keras_dp.preemption import Preempted

STEPS, EPOCHS = 5, 3


def dataset(tf, repeat):
    x, y = _problem.data(STEPS, _problem.GLOBAL_BATCH)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(_problem.GLOBAL_BATCH)
    return ds.repeat() if repeat else ds


def fit(tf, repeat, callbacks=(), epochs=EPOCHS):
    model = _problem.build_model()
    kwargs = {"steps_per_epoch": STEPS} if repeat else {}
    history = model.fit(dataset(tf, repeat), epochs=epochs, verbose=0, shuffle=False,
                        callbacks=list(callbacks), **kwargs)
    return model, history


class Interrupt(keras.callbacks.Callback):
    """Raises (or sends a signal) after the n-th training step."""

    def __init__(self, after, signum=None):
        super().__init__()
        self.after, self.signum, self.steps = after, signum, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == self.after:
            if self.signum:
                os.kill(os.getpid(), self.signum)
            else:
                raise KeyboardInterrupt("simulated kill")


def diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def uninterrupted(tf):
    return {repeat: fit(tf, repeat)[0].get_weights() for repeat in (False, True)}


@pytest.mark.parametrize("repeat,save_freq,interrupt_after", [
    (False, 2, 8),        # mid-epoch, per-epoch data: replay 2 steps of epoch 2, redo 1
    (False, "epoch", 7),  # epoch backups only
    (True, 3, 11),        # infinite data: the data position spans epochs
    (True, "epoch", 10),  # an epoch boundary of an infinite dataset
    (False, 1, 14),
])
def test_a_resumed_fit_ends_with_the_uninterrupted_weights(tf, tmp_path, uninterrupted,
                                                          repeat, save_freq, interrupt_after):
    directory = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        fit(tf, repeat, [BackupAndRestore(directory, save_freq=save_freq),
                         Interrupt(interrupt_after)])
    backup = BackupAndRestore(directory, save_freq=save_freq)
    model, history = fit(tf, repeat, [backup])
    assert diff(model.get_weights(), uninterrupted[repeat]) <= 1e-6
    assert backup.global_step == EPOCHS * STEPS
    assert len(history.history["loss"]) < EPOCHS  # it did resume, not start over
    assert not os.path.exists(directory)  # deleted at the end (delete_checkpoint=True)


def test_ignoring_the_data_position_would_change_the_result(tf, tmp_path, uninterrupted,
                                                           monkeypatch):
    """The resume test above can fail: without taking the consumed batches it does."""
    directory = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        fit(tf, True, [BackupAndRestore(directory, save_freq=3), Interrupt(11)])
    monkeypatch.setattr(BackupAndRestore, "_take", lambda self, iterator, count: None)
    model, _ = fit(tf, True, [BackupAndRestore(directory, save_freq=3)])
    assert diff(model.get_weights(), uninterrupted[True]) > 1e-4


@pytest.mark.parametrize("replay_data", [False, True])
def test_an_input_that_starts_at_the_backups_step_needs_no_replay(tf, tmp_path, uninterrupted,
                                                                  replay_data):
    """`latest_backup()` + `replay_data=False`: what `keras-dp train` does. Replaying on
    top of an input that already starts there would skip the steps twice."""
    directory = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        fit(tf, True, [BackupAndRestore(directory, save_freq=3), Interrupt(11)])
    step = latest_backup(directory)["global_step"]
    assert step == 9 and latest_backup(str(tmp_path / "none")) is None

    class Count(keras.callbacks.Callback):
        steps = 0

        def on_train_batch_end(self, batch, logs=None):
            if not is_replayed_step(self.model, batch):
                self.steps += 1

    counter = Count()
    progress = Progress(EPOCHS * STEPS, initial_step=step, style="none")
    throughput = Throughput(_problem.GLOBAL_BATCH, skip_steps=0)
    model = _problem.build_model()
    model.fit(dataset(tf, True).skip(step), epochs=EPOCHS, steps_per_epoch=STEPS, verbose=0,
              callbacks=[BackupAndRestore(directory, save_freq=3, replay_data=replay_data),
                         counter, progress, throughput])
    if replay_data:
        assert diff(model.get_weights(), uninterrupted[True]) > 1e-4
        return
    assert diff(model.get_weights(), uninterrupted[True]) <= 1e-6
    # The 3 steps of epoch 2 done before the backup are skipped, not counted.
    assert counter.steps == EPOCHS * STEPS - step
    assert progress.step == EPOCHS * STEPS
    assert throughput.steps == EPOCHS * STEPS - step


def test_sigterm_saves_the_current_step_exits_75_and_resumes(tf, tmp_path, uninterrupted):
    directory = str(tmp_path / "backup")
    with pytest.raises(Preempted) as info:
        # The signal comes in a callback before the backup's, so it is seen at step 7.
        fit(tf, False, [Interrupt(7, signal.SIGTERM),
                        BackupAndRestore(directory, save_freq=False)])
    assert info.value.code == 75 and info.value.step == 7
    meta = BackupStore(directory, is_chief=True).choose().backup.meta
    assert meta["global_step"] == 7 and meta["reason"] == "preemption"
    assert (meta["epoch"], meta["step_in_epoch"]) == (1, 2)
    model, _ = fit(tf, False, [BackupAndRestore(directory, save_freq=False)])
    assert diff(model.get_weights(), uninterrupted[False]) <= 1e-6


def test_sigterm_in_the_last_step_lets_the_program_finish(tf, tmp_path, capsys):
    directory = str(tmp_path / "backup")
    handler = signal.getsignal(signal.SIGTERM)
    # After the backup's callback in the last step: training completes first.
    fit(tf, False, [BackupAndRestore(directory, save_freq=5),
                    Interrupt(EPOCHS * STEPS, signal.SIGTERM)])
    assert "training is complete, the program goes on" in capsys.readouterr().err
    assert BackupStore(directory, is_chief=True).choose().backup is not None  # kept
    assert signal.getsignal(signal.SIGTERM) is handler


def test_the_optimizer_state_is_restored(tf, tmp_path):
    directory = str(tmp_path / "backup")

    def adam_model():
        model = _problem.build_model()
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
        return model

    model = adam_model()
    with pytest.raises(KeyboardInterrupt):
        model.fit(dataset(tf, False), epochs=2, verbose=0,
                  callbacks=[BackupAndRestore(directory, save_freq=1), Interrupt(7)])
    saved = [v.numpy() for v in model.optimizer.variables]
    with pytest.raises(KeyboardInterrupt, match="seen enough"):
        adam_model().fit(dataset(tf, False), epochs=2, verbose=0,
                         callbacks=[BackupAndRestore(directory, save_freq=1), Stop()])
    # Right after on_train_begin the Adam moments and iteration count are the saved ones.
    assert int(Stop.seen["iterations"]) == 7
    for a, b in zip(saved, Stop.seen["optimizer"]):
        np.testing.assert_array_equal(a, b)


class Stop(keras.callbacks.Callback):
    """Records the optimizer right after the backup is restored, then interrupts."""

    seen = {}

    def on_train_begin(self, logs=None):
        Stop.seen = {"iterations": self.model.optimizer.iterations.numpy(),
                     "optimizer": [v.numpy() for v in self.model.optimizer.variables]}
        raise KeyboardInterrupt("seen enough")


def test_a_backup_of_another_model_is_refused(tf, tmp_path):
    directory = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        fit(tf, False, [BackupAndRestore(directory, save_freq=1), Interrupt(2)])
    other = keras.Sequential([keras.Input((_problem.FEATURES,)), keras.layers.Dense(3),
                              keras.layers.Dense(1)])
    other.compile(optimizer="sgd", loss="mse")
    with pytest.raises(BackupError, match="written by a different model"):
        other.fit(dataset(tf, False), epochs=1, verbose=0,
                  callbacks=[BackupAndRestore(directory)])


def test_arguments_are_checked():
    with pytest.raises(ConfigError, match="backup_dir"):
        BackupAndRestore("")
    with pytest.raises(ConfigError, match="save_freq"):
        BackupAndRestore("/tmp/x", save_freq=0)
    with pytest.raises(ConfigError, match="save_freq"):
        BackupAndRestore("/tmp/x", save_freq="batch")


def test_same_signatures_as_keras():
    keras_params = list(inspect.signature(keras.callbacks.BackupAndRestore).parameters)
    ours = list(inspect.signature(BackupAndRestore).parameters)
    assert ours[:len(keras_params)] == keras_params
    for ours_cls, keras_cls in ((ModelCheckpoint, keras.callbacks.ModelCheckpoint),
                                (TensorBoard, keras.callbacks.TensorBoard),
                                (CSVLogger, keras.callbacks.CSVLogger)):
        assert inspect.signature(ours_cls) == inspect.signature(keras_cls)
        assert issubclass(ours_cls, keras_cls)


# -- atomic writes ----------------------------------------------------------------------

def _store(tmp_path, **kwargs):
    return BackupStore(str(tmp_path / "backup"), is_chief=True, **kwargs)


def _save(store, step, tag):
    def write(prefix):
        with open(prefix + ".index", "w") as handle:
            handle.write(tag)
    return store.save(step, write, {"global_step": step, "tag": tag})


def test_a_save_killed_midway_leaves_the_previous_backup_latest(tmp_path, monkeypatch):
    store = _store(tmp_path)
    _save(store, 4, "four")
    # Killed while writing the state of step 6: a directory without meta.json.
    def crash(path, text):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr("keras_dp.callbacks._backup_store.write_text", crash)
    with pytest.raises(KeyboardInterrupt):
        _save(store, 6, "six")
    monkeypatch.undo()
    found = store.choose().backup
    assert found.meta["global_step"] == 4 and open(found.prefix + ".index").read() == "four"
    # A stale temporary pointer and the unfinished directory are cleaned up.
    (tmp_path / "backup" / "latest.tmp-123").write_text("{")
    store.clean_unfinished()
    assert sorted(os.listdir(tmp_path / "backup")) == ["ckpt-000000004-0", "latest"]


def test_a_corrupt_pointer_falls_back_to_the_newest_complete_backup(tmp_path):
    store = _store(tmp_path, keep=2)
    _save(store, 2, "two")
    _save(store, 5, "five")
    (tmp_path / "backup" / "latest").write_text("not json")
    assert store.choose().backup.meta["global_step"] == 5


def test_saving_a_step_again_never_touches_the_complete_backup(tmp_path):
    store = _store(tmp_path)
    _save(store, 6, "first")
    _save(store, 6, "second")
    assert store.choose().backup.meta["tag"] == "second"
    assert sorted(os.listdir(tmp_path / "backup")) == ["ckpt-000000006-1", "latest"]


def test_double_checkpoint_keeps_two(tmp_path):
    store = _store(tmp_path, keep=2)
    for step in (1, 2, 3):
        _save(store, step, str(step))
    assert sorted(os.listdir(tmp_path / "backup")) == ["ckpt-000000002-0",
                                                       "ckpt-000000003-0", "latest"]
    assert json.loads((tmp_path / "backup" / "latest").read_text()) == {
        "name": "ckpt-000000003-0"}


def test_a_non_chief_writes_only_to_a_temporary_directory_it_removes(tmp_path, monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    store = BackupStore(str(tmp_path / "backup"), is_chief=False, worker_index=1)
    written = []
    where = store.save(3, lambda prefix: (written.append(prefix),
                                          open(prefix + ".index", "w").close()), {})
    assert written and written[0].startswith(str(temp)) and "worker1" in where
    assert not (tmp_path / "backup").exists() and os.listdir(temp) == []
    store.delete_all()
    store.clean_unfinished()


# -- chief-only callbacks ------------------------------------------------------------------

def _all_callbacks(root, backup_freq=1):
    return [BackupAndRestore(str(root / "backup"), save_freq=backup_freq,
                             delete_checkpoint=False),
            ModelCheckpoint(str(root / "ckpt" / "model-{epoch}.weights.h5"),
                            save_weights_only=True),
            TensorBoard(str(root / "tb")), CSVLogger(str(root / "log.csv"))]


def test_a_single_process_writes_like_keras(tf, tmp_path):
    fit(tf, False, _all_callbacks(tmp_path), epochs=2)
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["model-1.weights.h5", "model-2.weights.h5"]
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 3
    assert any(files for _, _, files in os.walk(tmp_path / "tb"))
    assert (tmp_path / "backup" / "latest").exists()


def test_a_non_chief_writes_nothing_into_the_users_directories(tf, tmp_path, monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    monkeypatch.setattr(backup_module, "worker_position", lambda strategy: (1, 1, False))
    monkeypatch.setattr(checkpoint_module, "position", lambda model: (1, 2, False))
    user = tmp_path / "user"
    fit(tf, False, _all_callbacks(user), epochs=2)
    assert not user.exists()
    leftovers = [name for name in os.listdir(temp) if name.startswith("keras_dp")]
    # TensorBoard's temporary directory goes at exit (atexit) if not at train end.
    assert leftovers == []
