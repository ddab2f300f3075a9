"""Whether a backup is exactly as written (sizes and SHA-256 in `meta.json`) and fits this run."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from typing import Any, Dict, List, Optional

from keras_dp.callbacks._storage import first_line, is_io_error
from keras_dp.chief_files import _gfile, is_local
from keras_dp.errors import KerasDPError

log = logging.getLogger("keras_dp")
_generations = itertools.count()


def file_digest(path: str) -> Dict[str, Any]:
    """`{"size": bytes, "sha256": hex}` of one file (local or any `tf.io.gfile` path)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") if is_local(path) else _gfile().GFile(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


def meta_checksum(meta: Dict[str, Any]) -> str:
    """The SHA-256 of `meta` without its own `checksum` (canonical JSON)."""
    body = {k: v for k, v in meta.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _bytes(count: int) -> str:
    return f"{count:,} byte{'s' if count != 1 else ''}"


def problem(directory: str, meta: Dict[str, Any], prefix: str) -> Optional[str]:
    """What makes the backup in `directory` (`meta`, checkpoint `prefix`) unusable, or None."""
    if "checksum" in meta and meta.get("checksum") != meta_checksum(meta):
        return "meta.json was changed after it was written (its checksum does not match)"
    files = meta.get("files")
    if files is None:   # written by an older keras_dp: every tensor is read
        import tensorflow as tf

        try:
            reader = tf.train.load_checkpoint(prefix)
            for key in reader.get_variable_to_shape_map():
                reader.get_tensor(key)
        except Exception as exc:  # noqa: BLE001 - TensorFlow raises several kinds here
            if not is_io_error(exc) and not isinstance(exc, (IndexError, ValueError)):
                raise
            return f"TensorFlow cannot read its checkpoint ({first_line(exc)})"
        return None
    if not isinstance(files, dict) or not files:
        return "meta.json lists no checkpoint files"
    gfile = _gfile()
    for name, expected in sorted(files.items()):
        path = os.path.join(directory, name)
        try:
            if not gfile.exists(path):
                return f"{name} is missing"
            size = gfile.stat(path).length
            if size != expected.get("size"):
                kind = "truncated" if size < expected.get("size", 0) else "longer than written"
                return (f"{name} is {kind} ({_bytes(size)} on disk, "
                        f"{_bytes(int(expected.get('size', 0)))} were written)")
            if file_digest(path)["sha256"] != expected.get("sha256"):
                return (f"{name} has changed bytes (its SHA-256 differs from the one recorded "
                        "when it was written)")
        except Exception as exc:  # noqa: BLE001 - OSError or tf.errors.OpError on this file
            if not is_io_error(exc):
                raise
            return f"{name} cannot be read ({first_line(exc)})"
    return None


class BackupError(KerasDPError, RuntimeError):
    """A backup cannot be used (written by another model, or not visible to every worker)."""


def agree_across_workers(mine: str, index: int, count: int, backup_dir) -> None:
    """Raises `BackupError` unless every worker found the backup `mine` (all must call it)."""
    if count <= 1:
        return
    from tensorflow.python.eager import context

    prefix = f"keras_dp/backup/{next(_generations)}/found"
    ctx = context.context()
    ctx.set_config_key_value(f"{prefix}/{index}", mine)
    seen = {i: ctx.get_config_key_value(f"{prefix}/{i}", timeout_in_ms=600_000)
            for i in range(count)}
    if len(set(seen.values())) > 1:
        described = ", ".join(f"worker {i}: {'no backup' if v == 'none' else v}"
                              for i, v in seen.items())
        raise BackupError(
            f"the workers see different backups in {backup_dir!r} ({described}). "
            "backup_dir must be on a filesystem every worker reads (NFS, a cluster "
            f"filesystem, gs://...). Received: backup_dir={backup_dir}")


def describe_variables(state) -> Dict[str, List[List[Any]]]:
    """`{group: [[path, shape], ...]}` of a backup's variables (recorded in `meta.json`)."""
    return {group: [[getattr(v, "path", getattr(v, "name", "")), list(v.shape)]
                    for v in variables] for group, variables in state.items()}


def same_layout(saved: Dict[str, Any], now: Dict[str, Any], backup_dir) -> Dict[str, Any]:
    """The groups of `saved` (`describe_variables`) to restore; `BackupError` if not `now`'s."""
    if "global_seed" in saved and "global_seed" not in now:
        log.warning("keras_dp: the backup has Keras' global seed generator state, but "
                    "this run has not created it yet; it is not restored")
        saved = {k: v for k, v in saved.items() if k != "global_seed"}
    for group in ("model", "optimizer"):
        old, new = saved.get(group, []), now.get(group, [])
        wrong = [f"variable {i} ({path}) has shape {tuple(a)} in the backup but {tuple(b)} now"
                 for i, ((_, a), (path, b)) in enumerate(zip(old, new)) if a != b]
        if len(old) != len(new) or wrong:
            detail = wrong[0] if len(old) == len(new) else \
                f"{len(old)} variables in the backup, {len(new)} now"
            raise BackupError(
                f"the backup in {backup_dir!r} was written by a different {group} "
                f"({detail}). Use a new backup_dir for a new model, or delete this one. "
                f"Received: backup_dir={backup_dir}")
    return saved
