"""Where `keras-dp train` keeps its state: the backups it resumes from, the files it saves."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from keras_dp.errors import ConfigError
from keras_dp.train_config import BACKUP_DIR, MODEL_FILE, STATE_FILE, TrainConfig


def backup_dir_of(config: TrainConfig, *, enabled: Optional[bool] = None) -> Optional[str]:
    """Where the job keeps its backups (None with `backup=False`, unless `enabled`)."""
    on = config.backup if enabled is None else enabled
    return (config.backup_dir or os.path.join(config.output_dir, BACKUP_DIR)) if on else None


def backup_point(backup_dir: Optional[str], data_key: Dict[str, Any],
                 total_steps: int) -> Optional[Dict[str, Any]]:
    """The interrupted run in `backup_dir`: its `step`, plan (`first_step`, `every`), or None."""
    from keras_dp.callbacks import latest_backup

    found = latest_backup(backup_dir)
    if found is None:
        return None
    job = (found.get("metadata") or {}).get("job")
    fix = (f"run the interrupted command again unchanged, or delete {backup_dir} "
           "(or pass --no-backup) to start over")
    if not job:
        raise ConfigError(f"{backup_dir} holds backups that keras-dp train did not write",
                          variable="backup_dir", received=backup_dir,
                          fix="use another --backup-dir / --output-dir, or delete it")
    if job.get("data") != data_key:
        before = (job.get("data") or {}).get("global_batch_size")
        if before != data_key["global_batch_size"] and before is not None:
            # Resizing keeps the run only with its global batch (docs/resizing.md).
            fix = (f"to continue it on another number of workers or replicas, keep its "
                   f"global batch: pass --global-batch-size {before}; or " + fix)
        raise ConfigError(
            f"the interrupted run backed up in {backup_dir} used other data settings "
            f"({job.get('data')}); continuing needs the same data, seq_len, global batch and "
            "seed", variable="backup_dir", received=backup_dir, fix=fix)
    step = int(job["first_step"]) + int(found["global_step"])
    # step == total_steps: training ended (e.g. a preemption agreed on the last
    # step) but the final validation and save did not happen; the run finishes them.
    if step > total_steps:
        raise ConfigError(
            f"the interrupted run backed up in {backup_dir} already trained {step} steps",
            variable="steps", received=total_steps,
            fix=f"pass --steps larger than {step}, or delete {backup_dir} to start over")
    return {"step": step, "first_step": int(job["first_step"]), "every": int(job["every"]),
            "history": (found.get("metadata") or {}).get("history") or {},
            "num_workers": found.get("num_workers")}


def save(model, config: TrainConfig, context, state: Dict[str, Any],
         backup_dir: Optional[str] = None) -> Optional[str]:
    """Every worker saves (saving may need all of them); only the chief keeps it, atomically.

    Returns the output directory (None on the other workers). A `ConfigError` when the disk
    refused the save (full, read-only) keeps the backups: the same command finishes the run.
    """
    from keras_dp import chief_files
    from keras_dp.callbacks._storage import free_space, is_storage_error
    from keras_dp.data.tokenizer import TOKENIZER_FILE

    if not context.is_chief:
        with chief_files.elsewhere(MODEL_FILE, "model", context.worker_index) as path:
            model.save(path)
        return None
    target = config.output_dir
    try:
        os.makedirs(target, exist_ok=True)
        with chief_files.atomic(os.path.join(target, MODEL_FILE)) as temp:
            model.save(temp)
        for name, data in ((TOKENIZER_FILE, model.tokenizer.get_config()), (STATE_FILE, state)):
            chief_files.write_text(os.path.join(target, name),
                                   json.dumps(data, indent=2, default=str))
    except Exception as exc:  # noqa: BLE001 - only a refused write is explained
        if not is_storage_error(exc):
            raise
        kept = (f"the backups in {backup_dir} are kept: free space and run the same command "
                "again, it finishes from the last backup" if backup_dir else
                "free space and run again")
        raise ConfigError(f"could not save the trained model in {target} ({exc}; "
                          f"{free_space(target)})", variable="output_dir", received=target,
                          fix=kept) from None
    return target
