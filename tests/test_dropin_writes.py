"""Stock Keras callbacks and model saving under a multi-worker strategy: one writer per file.

The keras_fix parts `stock_callbacks` and `chief_saving`. The single-process tests stand in
for a worker of a 2-worker cluster (a stand-in strategy registered as this process's
multi-worker strategy, so `chief_files.position()` answers as on that worker) and run each
part with and without it; the multi-process tests run the unchanged user program on 2 real
workers on 127.0.0.1, with the parts and without them.
"""

import csv
import itertools
import json
import os
import types

import numpy as np
import pytest

import _problem
from _multiproc import run_workers
from keras_dp import chief_files, keras_fix, multi_worker
from keras_dp.keras_fix import chief_saving as dropin_saving

PARTS = ("stock_callbacks", "chief_saving")
TEMP = chief_files.TEMP_MARK


@pytest.fixture
def parts():
    """Applies this file's parts for a test; puts back the state from before."""
    before = [part for part in keras_fix.PARTS if keras_fix.is_applied(part)]
    keras_fix.remove(PARTS)
    keras_fix.apply(PARTS)
    yield
    keras_fix.remove()
    keras_fix.apply(before)


def fake_worker(tf, index):
    """A stand-in for worker `index` of 2 (what `worker_position` reads of a strategy)."""
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({"worker": ["127.0.0.1:1", "127.0.0.1:2"]}),
        task_type="worker", task_id=index)
    return types.SimpleNamespace(
        extended=types.SimpleNamespace(_num_workers=2, should_checkpoint=index == 0),
        cluster_resolver=resolver)


@pytest.fixture
def as_worker(tf, monkeypatch, tmp_path):
    """`as_worker(i)`: this process plays worker i of 2; temporary directories go to tmp/."""
    private = tmp_path / "private"
    private.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(private))
    waits, announced = [], []
    monkeypatch.setattr(dropin_saving, "_numbers", itertools.count(1))
    monkeypatch.setattr(dropin_saving, "_wait_for_chief", lambda n, i, p: waits.append(n))
    monkeypatch.setattr(dropin_saving, "_announce", announced.append)
    monkeypatch.setattr("keras_dp.callbacks._backup_verify.agree_across_workers",
                        lambda mine, index, count, backup_dir: None)

    def play(index):
        monkeypatch.setitem(multi_worker._multi_worker, "strategy", fake_worker(tf, index))
        return types.SimpleNamespace(private=private, waits=waits, announced=announced)

    yield play


def leftovers(private):
    """keras_dp's temporary directories still in `private` (TensorFlow's own files aside)."""
    return [name for name in os.listdir(private) if name.startswith("keras_dp_")]


def everything_under(path):
    return sorted(os.path.relpath(os.path.join(d, f), path)
                  for d, dirs, files in os.walk(path) for f in files + dirs)


def save_everything(model, shared):
    """Every way a guide saves a model, to paths under `shared`."""
    import keras

    model.save(shared / "final.keras")
    model.save_weights(shared / "final.weights.h5")
    keras.saving.save_model(model, str(shared / "alias.keras"))
    keras.models.save_model(model, shared / "legacy.h5")
    model.export(str(shared / "exported"), verbose=False)


def test_parts_are_listed_and_needed(tf):
    needed = {part["name"]: part["in_range"] for part in keras_fix.registry()}
    assert needed["stock_callbacks"] and needed["chief_saving"]
    assert set(PARTS) <= set(keras_fix.MULTI_WORKER_PARTS)
    described = keras_fix.describe()
    assert "stock_callbacks (" in described and "chief_saving (" in described


def test_non_chief_saves_nowhere(tf, parts, as_worker, tmp_path):
    worker = as_worker(1)
    shared = tmp_path / "shared"
    shared.mkdir()
    model = _problem.build_model()
    save_everything(model, shared)
    assert everything_under(shared) == []            # the non-chief wrote no user path
    assert leftovers(worker.private) == []           # and removed its own copies
    assert worker.waits == [1, 2, 3, 4, 5]            # each save waited for the chief's

    keras_fix.remove(["chief_saving"])                # Keras alone: every worker writes
    save_everything(model, shared)
    assert {"final.keras", "final.weights.h5", "alias.keras", "legacy.h5",
            "exported"} <= set(everything_under(shared))


def test_tutorial_non_chief_path_is_not_written(tf, parts, as_worker, tmp_path):
    """TF's tutorial: a non-chief saves into a directory of its own, then deletes it."""
    as_worker(1)
    own = tmp_path / "model" / "workertemp_1"
    own.mkdir(parents=True)
    _problem.build_model().save(own / "model.keras")
    assert os.listdir(own) == []
    tf.io.gfile.rmtree(str(own))                      # the tutorial's clean-up still works


def test_chief_saves_atomically(tf, parts, as_worker, tmp_path):
    import keras

    worker = as_worker(0)
    shared = tmp_path / "shared"
    shared.mkdir()
    model = _problem.build_model()
    save_everything(model, shared)
    assert worker.announced == [1, 2, 3, 4, 5] and worker.waits == []
    assert not [p for p in everything_under(shared) if TEMP in p]
    loaded = keras.saving.load_model(shared / "final.keras")
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert (shared / "exported" / "saved_model.pb").exists()
    model.export(str(shared / "exported"), verbose=False)  # replaces the directory
    assert (shared / "exported" / "saved_model.pb").exists()

    # A save killed half-way (here: an exception after the first layer was written)
    # leaves the previous file; a temporary file an earlier kill left is deleted.
    (shared / f".final{TEMP}999-dead.keras").write_bytes(b"half")
    broken = _problem.build_model()
    broken.layers[1].save_own_variables = lambda store: (_ for _ in ()).throw(
        OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        broken.save(shared / "final.keras")
    assert not [p for p in everything_under(shared) if TEMP in p]
    keras.saving.load_model(shared / "final.keras")   # still the complete previous file

    keras_fix.remove(["chief_saving"])                # Keras alone: a half file at the path
    with pytest.raises(OSError, match="disk full"):
        broken.save(shared / "final.keras")
    with pytest.raises(Exception):
        keras.saving.load_model(shared / "final.keras")


def test_one_worker_is_stock_keras(tf, parts, tmp_path, monkeypatch):
    """No multi-worker strategy in the process: Keras' functions run as they are."""
    import keras

    monkeypatch.setitem(multi_worker._multi_worker, "strategy", None)
    shared = tmp_path / "shared"
    shared.mkdir()
    model = _problem.build_model()
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: (opened.append(str(path)),
                                                                real_open(path, *a, **k))[1])
    model.save(shared / "final.keras")
    assert str(shared / "final.keras") in opened      # Keras wrote the path itself
    assert not [p for p in opened if TEMP in p]
    keras.saving.load_model(shared / "final.keras")


def fit_with_stock_callbacks(tf, shared, epochs=2):
    import keras

    model = _problem.build_model()
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(shared / "ckpt" / "ckpt-{epoch}.keras")),
        keras.callbacks.ModelCheckpoint(str(shared / "best.weights.h5"),
                                        save_weights_only=True, save_best_only=True,
                                        monitor="loss"),
        keras.callbacks.BackupAndRestore(str(shared / "backup"), delete_checkpoint=False),
        keras.callbacks.CSVLogger(str(shared / "log.csv")),
    ]
    try:
        import tensorboard  # noqa: F401
        callbacks.append(keras.callbacks.TensorBoard(str(shared / "tb")))
    except ImportError:
        pass
    history = model.fit(_problem.distributed_dataset(tf.distribute.get_strategy()),
                        epochs=epochs, steps_per_epoch=_problem.STEPS, verbose=0,
                        callbacks=callbacks)
    return model, history, callbacks


def test_stock_callbacks_on_a_non_chief_write_nowhere(tf, parts, as_worker, tmp_path):
    worker = as_worker(1)
    shared = tmp_path / "shared"
    _, history, callbacks = fit_with_stock_callbacks(tf, shared)
    assert len(history.history["loss"]) == 2
    assert callbacks[1].best == min(history.history["loss"])  # its state is kept
    assert not shared.exists() or everything_under(shared) == []
    assert leftovers(worker.private) == []

    keras_fix.remove(PARTS)                           # Keras alone: every worker writes
    fit_with_stock_callbacks(tf, shared)
    written = everything_under(shared)
    assert {"ckpt/ckpt-1.keras", "best.weights.h5", "backup/latest.weights.h5",
            "log.csv"} <= set(written), written


def test_stock_callbacks_on_the_chief(tf, parts, as_worker, tmp_path):
    import keras

    as_worker(0)
    shared = tmp_path / "shared"
    _, history, _ = fit_with_stock_callbacks(tf, shared)
    written = everything_under(shared)
    assert {"ckpt/ckpt-1.keras", "ckpt/ckpt-2.keras", "best.weights.h5",
            "backup/latest.weights.h5", "backup/training_metadata.json",
            "log.csv"} <= set(written)
    assert not [p for p in written if TEMP in p]
    assert json.loads((shared / "backup" / "training_metadata.json").read_text()) == {
        "epoch": 2, "batch": 0}
    with open(shared / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["loss"]) for r in rows] == pytest.approx(history.history["loss"])
    keras.saving.load_model(shared / "ckpt" / "ckpt-2.keras")


# -- 2 real workers ------------------------------------------------------------------

OTHER_PARTS = ",".join(p for p in keras_fix.PARTS if p not in PARTS)


def written_by(tmp_path, index):
    """`{(kind, path relative to shared/)}` the worker opened for writing or renamed to."""
    shared = str(tmp_path / "shared") + os.sep
    lines = (tmp_path / f"writes_{index}.txt").read_text().splitlines()
    return {(kind, path[len(shared):]) for kind, path in (line.split(" ", 1) for line in lines)}


def event_file_pids(directory):
    """The process ids in TensorBoard event file names (`events.out.tfevents.T.HOST.PID.N.v2`)."""
    return {name.split(".")[-3] for _, _, files in os.walk(directory) for name in files
            if name.startswith("events.out.tfevents.")}


@pytest.mark.multiprocess
def test_two_workers_run_the_stock_program(tf, tmp_path):
    import keras

    results = run_workers("writes_worker.py", 2, [str(tmp_path)], timeout=300)
    for result in results:
        result.check()
    r0, r1 = (json.loads((tmp_path / f"record_{i}.json").read_text()) for i in (0, 1))
    assert r0["is_chief"] and not r1["is_chief"]
    shared = tmp_path / "shared"

    # BackupAndRestore: both workers restored the backup of epoch 2 (saved after epoch
    # index 1), resumed there, and the backup was deleted at the end (by the chief).
    assert r0["restored_crc"] == r1["restored_crc"] == r0["first_epoch_crc"]["1"]
    assert r0["second_epochs"] == r1["second_epochs"] == [2, 3]
    assert not (shared / "backup").exists()
    # EarlyStopping and ReduceLROnPlateau decide the same on every worker (on the
    # all-reduced logs): the same stop epoch, the same learning rates.
    assert r0["stopped_epoch"] == r1["stopped_epoch"] == 3
    assert r0["first_lr"] == r1["first_lr"] and r0["first_lr"][1] < r0["first_lr"][0]
    assert r0["second_lr"] == r1["second_lr"]
    # Every worker loads the chief's file right after its own save returned.
    assert r0["final_crc"] == r1["final_crc"] == r0["loaded_crc"] == r1["loaded_crc"]

    # One writer per file: the non-chief touched nothing under shared/, the chief wrote
    # each file under a temporary name and renamed it.
    assert written_by(tmp_path, 1) == set()
    renamed = {path for kind, path in written_by(tmp_path, 0) if kind == "rename"}
    expected = {"final.keras", "final.weights.h5", "alias.keras", "legacy.h5", "exported",
                "tutorial/model.keras", "backup/latest.weights.h5",
                "backup/training_metadata.json"}
    assert expected <= renamed, renamed
    files = everything_under(shared)
    assert not [p for p in files if TEMP in p], files
    assert not (shared / "tutorial" / "workertemp_1").exists()
    assert (shared / "exported" / "saved_model.pb").exists()
    for name in ("final.keras", "alias.keras", "tutorial/model.keras", "legacy.h5",
                 "ckpt/ckpt-1.keras", "ckpt/ckpt-2.keras", "ckpt/ckpt-3.keras",
                 "ckpt/ckpt-4.keras"):
        # (compile=False: Keras' legacy .h5 loader cannot rebuild the "mse" loss.)
        keras.saving.load_model(shared / name, compile=False)
    with open(shared / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [2, 3]
    assert [float(r["loss"]) for r in rows] == pytest.approx(r0["second_loss"])
    if r0["tensorboard"]:
        assert event_file_pids(shared / "tb") == {str(r0["pid"])}


@pytest.mark.multiprocess
def test_two_workers_without_the_parts_write_the_same_files(tmp_path):
    """Keras alone (the two parts switched off): the non-chief writes the user's files too."""
    results = run_workers("writes_worker.py", 2, [str(tmp_path)], timeout=300,
                          env={"KERAS_DP_KERAS_FIX": OTHER_PARTS})
    output = "\n".join(r.output for r in results)
    duplicated = written_by(tmp_path, 1)
    print(f"without the parts: exit codes {[r.returncode for r in results]}, "
          f"lock error: {'unable to lock file' in output}, non-chief wrote {sorted(duplicated)}")
    # The non-chief wrote into the user's files (how far it got depends on which
    # collision below ends the run first).
    assert duplicated & {("open", "log.csv"), ("h5py", "backup/latest.weights.h5"),
                         ("open", "ckpt/ckpt-1.keras")}, duplicated
    if all(r.returncode == 0 for r in results):
        assert ("h5py", "backup/latest.weights.h5") in duplicated
        assert ("open", "ckpt/ckpt-1.keras") in duplicated
        assert ("open", "final.keras") in duplicated
        if json.loads((tmp_path / "record_0.json").read_text())["tensorboard"]:
            assert len(event_file_pids(tmp_path / "shared" / "tb")) == 2
    else:
        # Stock Keras' two writers collide: h5py's lock, a file the other removed, or
        # both creating backup_dir at once (a race: any of the three).
        assert any(symptom in output for symptom in (
            "unable to lock file", "No such file", "File exists")), output[-4000:]


@pytest.mark.multiprocess
@pytest.mark.parametrize("savers", ["every", "chief"])
def test_the_chief_outlives_a_later_worker(tmp_path, savers):
    """The chief saves and ends while worker 1 is 6 s behind: the chief hosts the
    coordination service worker 1 asks whether the save is done, so it waits at exit until
    worker 1 has read that (`every`); a save on the chief alone (`chief`) waits only until
    worker 1 reaches its exit, not 300 s."""
    import keras

    results = run_workers("exit_worker.py", 2, [str(tmp_path), "6", savers], timeout=150)
    for result in results:
        result.check()
    assert (tmp_path / "done_0").exists() and (tmp_path / "done_1").exists()
    keras.saving.load_model(tmp_path / "model.keras")
    assert not [p for p in everything_under(tmp_path) if TEMP in p]
