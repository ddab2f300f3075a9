"""`BackupAndRestore`: multi-worker-aware, atomic, step-exact backups for `model.fit`.
See docs/callbacks.md, docs/backups.md and docs/train_job.md."""

from __future__ import annotations

import functools
import logging
import math
import numbers
import sys
from typing import Any, Dict, Optional

import keras

from keras_dp.callbacks import _backup_state as state
from keras_dp.callbacks._backup_store import BackupStore, BackupWriteError, describe
from keras_dp.callbacks._backup_verify import agree_across_workers
from keras_dp.errors import ConfigError, whole_number
from keras_dp.fault import worker_position
from keras_dp.keras_fix import fit_step
from keras_dp.preemption import Preempted, PreemptionWatcher

log = logging.getLogger("keras_dp")

_ACTIVE = "_keras_dp_backup"


def latest_backup(backup_dir) -> Optional[Dict[str, Any]]:
    """The metadata of the newest intact backup (checked as a restore does), or None.

    Args:
        backup_dir: The callback's `backup_dir`.

    Returns:
        A dict with `global_step` (steps done since the first `fit` that wrote backups
        there), `epoch`, `step_in_epoch` and the callback's `metadata`; None if no backup.
    """
    found = BackupStore(str(backup_dir), is_chief=False).choose().backup if backup_dir else None
    return found and found.meta


def steps_per_batch(model) -> int:
    """How many training steps one `fit` batch hook stands for (`steps_per_execution`)."""
    return max(1, int(getattr(model, "steps_per_execution", 1) or 1))


def is_replayed_step(model, batch: int) -> bool:
    """Whether `fit`'s step `batch` only skips a step done before a restore (not to count).

    Args:
        model: The model being trained (`callback.model`).
        batch: The `batch` argument of `on_train_batch_begin/end`.
    """
    backup = getattr(model, _ACTIVE, None)
    return backup is not None and backup.is_replayed(batch)


class BackupAndRestore(keras.callbacks.Callback):
    """Like Keras' `BackupAndRestore`, multi-worker, and an interrupted `fit` resumes at the step.

    Args:
        backup_dir: Directory for the backups, only for them. Only the chief
            writes to it; every worker must read it (shared, or `gs://`).
        save_freq: `"epoch"`, an integer N (every N steps counted from the
            start of training), or `False` (only on preemption).
        double_checkpoint: Keep at least the two newest backups.
        delete_checkpoint: Delete the backups when training finishes.
        save_before_preemption: On SIGTERM, save at a step all workers share, exit 75.
        replay_data: On resume, take the batches the interrupted run had taken from a fresh
            iterator; `False` when the program starts its input at the backup's step.
        metadata: A JSON-able dict (or a function returning one at each save), saved with
            every backup (`latest_backup(...)["metadata"]`).
        keep: How many backups to keep (default 2); a damaged one is reported, the next used.

    Raises:
        ConfigError: for an empty `backup_dir`, a bad `save_freq` or `keep`.
    """

    def __init__(self, backup_dir, save_freq="epoch", double_checkpoint=False,
                 delete_checkpoint=True, *, save_before_preemption=True, replay_data=True,
                 metadata=None, keep=2):
        super().__init__()
        if not backup_dir:
            raise ConfigError("must name a directory", variable="backup_dir",
                              received=repr(backup_dir),
                              fix="pass e.g. backup_dir='/shared/run1/backup'")
        if not (save_freq == "epoch" or save_freq is False or (
                isinstance(save_freq, numbers.Integral) and not isinstance(save_freq, bool)
                and save_freq > 0)):
            raise ConfigError("must be 'epoch', a positive number of steps, or False",
                              variable="save_freq", received=repr(save_freq),
                              fix="pass save_freq='epoch' or e.g. save_freq=100")
        self.keep = max(whole_number(keep, "keep", fix="pass keep=2 (the default) or more"),
                        2 if double_checkpoint else 1)
        self.backup_dir = str(backup_dir)
        self.save_freq = save_freq
        self.delete_checkpoint = delete_checkpoint
        self.save_before_preemption = save_before_preemption
        self.replay_data = bool(replay_data)
        self.metadata = metadata
        self._store: Optional[BackupStore] = None
        self._watcher: Optional[PreemptionWatcher] = None
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.global_step = 0          # training steps done, across restarts
        self._epoch = 0
        self._step_in_epoch = 0
        self._position = 0            # batches taken from the current iterator
        self._iterator = None
        self._hidden_skip = 0         # batches to take before the resumed epoch's steps
        self._replay_calls = 0        # train-function calls that only read data
        self._replay_logs: Dict[str, float] = {}
        self._resume: Optional[Dict[str, Any]] = None
        self._boundary_save = False
        self._last_saved_step: Optional[int] = None
        self._last_good_step: Optional[int] = None   # of the last backup actually written
        self._last_logs: Dict[str, float] = {}
        self._set_initial_epoch = False

    def is_replayed(self, batch: int) -> bool:
        """Whether step `batch` of the current epoch is skipped (done before the restore)."""
        resume = self._resume
        return (resume is not None and self._epoch == resume["epoch"]
                and int(batch) < resume["step_in_epoch"])

    def delete_backups(self) -> None:
        """Deletes the backups (chief only), e.g. after `fit` with `delete_checkpoint=False`."""
        if self._store is not None:
            self._store.delete_all()

    def on_train_begin(self, logs=None):
        self._reset_counters()
        setattr(self.model, _ACTIVE, self)
        strategy = self.model.distribute_strategy
        index, self._count, is_chief = worker_position(strategy)
        self._store = BackupStore(self.backup_dir, is_chief=is_chief, worker_index=index,
                                  keep=self.keep)
        self._store.clean_unfinished()
        state.ensure_built(self.model)
        choice = self._store.choose()
        agree_across_workers("none" if choice.backup is None else choice.backup.name,
                             index, self._count, self.backup_dir)
        message = describe(choice, self.backup_dir, self._store.set_aside(choice))
        if message and is_chief:
            log.warning(message)
        if choice.backup is not None:
            self._restore(choice.backup.prefix, choice.backup.meta)
        fit_step.wrap(self.model, lambda original: functools.partial(self._train, original))
        if self.save_before_preemption:
            self._watcher = PreemptionWatcher(strategy).start()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._step_in_epoch = epoch, 0
        resume = self._resume
        if self.is_replayed(0):   # resuming inside this epoch
            self._step_in_epoch = resume["step_in_epoch"]
            state.read_metrics(self.model, resume["prefix"], resume["metrics_variables"])

    def on_train_batch_end(self, batch, logs=None):
        if self.is_replayed(batch):
            return  # a replayed step: it only read data
        done = int(batch) + 1
        before = self.global_step
        self.global_step += max(0, done - self._step_in_epoch)
        self._step_in_epoch = done
        self._last_logs = state.float_logs(logs)
        if self._watcher is not None and self._watcher.should_stop(self.global_step):
            where = self._save("preemption")  # None: the disk refused it
            self._watcher.stop()
            fit_step.unwrap(self.model)
            raise Preempted(self.global_step, where)
        if self.save_freq not in ("epoch", False) and \
                self.global_step // self.save_freq > before // self.save_freq:
            self._save("step")

    def on_epoch_end(self, epoch, logs=None):
        self._resume = None if self._resume is not None and epoch >= self._resume["epoch"] \
            else self._resume
        self._epoch, self._step_in_epoch = epoch + 1, 0
        if logs:
            self._last_logs = state.float_logs(logs)
        # Saved at the next step's start, once Keras shows whether it keeps the iterator
        # (an infinite dataset) or starts a new one (the data position); nothing trains between.
        if self.save_freq == "epoch" or self._last_saved_step == self.global_step:
            self._boundary_save = True

    def on_train_end(self, logs=None):
        fit_step.unwrap(self.model)
        if getattr(self.model, _ACTIVE, None) is self:
            setattr(self.model, _ACTIVE, None)
        pending = self._watcher is not None and self._watcher.pending
        if self._watcher is not None:
            self._watcher.stop()
        if self._set_initial_epoch:
            self.model._initial_epoch = None
        if pending:
            # Training is complete: let the program finish (it may be saving the
            # model), and keep the backups in case it is killed before it does.
            sys.stderr.write("keras_dp: SIGTERM came after the last training step; training "
                             "is complete, the program goes on, the backups are kept\n")
        elif self.delete_checkpoint:
            self._store.delete_all()

    def _save(self, reason: str) -> Optional[str]:
        variables, write = state.writer(self.model)
        meta = {"format": state.FORMAT, "reason": reason, "global_step": self.global_step,
                "epoch": self._epoch, "step_in_epoch": self._step_in_epoch,
                "data_position": self._position, "logs": self._last_logs,
                "num_workers": self._count, "variables": variables,
                "metrics_variables": len(self.model.metrics_variables)}
        if self.metadata is not None:
            meta["metadata"] = self.metadata() if callable(self.metadata) else self.metadata
        try:
            where = self._store.save(self.global_step, write, meta)
        except BackupWriteError as exc:
            # Still "saved here" for the epoch-boundary decision, which every worker
            # must take alike (a save is collective); only the chief's write failed.
            self._last_saved_step = self.global_step
            kept = self._last_good_step
            previous = (f"the previous backup (step {kept}) is intact and will be restored "
                        "if the run stops" if kept is not None else "there is no earlier backup")
            retry = "as planned" if self.save_freq in ("epoch", False) else \
                f"at step {(self.global_step // self.save_freq + 1) * self.save_freq}"
            log.warning("keras_dp: WARNING: the backup of step %d was NOT saved: %s. Training "
                        "goes on: %s; the next backup is tried %s. Free space (or fix the "
                        "permissions) in %s.",
                        self.global_step, exc, previous, retry, self.backup_dir)
            return None
        self._last_saved_step = self._last_good_step = self.global_step
        log.info("keras_dp: backup of step %d (%s) in %s", self.global_step, reason, where)
        return where

    def _restore(self, prefix: str, meta: Dict[str, Any]) -> None:
        state.read(self.model, prefix, meta, self.backup_dir)
        self.global_step = int(meta["global_step"])
        self._last_saved_step = self._last_good_step = self.global_step
        epoch, step = int(meta["epoch"]), int(meta["step_in_epoch"])
        spe = steps_per_batch(self.model)
        position = int(meta.get("data_position", step))
        self._resume = {"epoch": epoch, "step_in_epoch": step, "prefix": prefix,
                        "metrics_variables": meta.get("metrics_variables")}
        self._replay_calls = math.ceil(step / spe)
        self._hidden_skip = max(0, position - self._replay_calls * spe) \
            if self.replay_data else 0
        self._replay_logs = dict(meta.get("logs") or {})
        self._epoch = epoch
        if epoch:
            self.model._initial_epoch = epoch
            self._set_initial_epoch = True
        log.warning("keras_dp: restored the backup of step %d (epoch %d, step %d of it) from "
                    "%s", self.global_step, epoch + 1, step, self.backup_dir)

    def _train(self, original, iterator):
        """`model.train_function` during `fit` (Keras-layer part `keras_fix.fit_step`)."""
        spe = steps_per_batch(self.model)
        if iterator is not self._iterator:
            self._iterator = iterator
            self._position = 0
            self._take(iterator, self._hidden_skip)
            self._hidden_skip = 0
        if self._boundary_save:
            self._boundary_save = False
            self._save("epoch")
        if self._replay_calls > 0:
            self._replay_calls -= 1
            self._take(iterator, spe if self.replay_data else 0)
            return self._replay_logs
        outputs = original(iterator)
        self._position += spe
        return outputs

    def _take(self, iterator, count: int) -> None:
        for _ in range(count):
            next(iterator)
            self._position += 1
