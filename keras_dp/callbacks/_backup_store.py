"""The on-disk layout of `BackupAndRestore` backups, written atomically.

```
backup_dir/
  latest                 # {"name": "ckpt-000000120-0"}: the newest complete backup
  ckpt-000000120-0/      # global step 120 (the last number tells saves of one step apart)
    state.index, state.data-00000-of-00001   # tf.train.Checkpoint of the variables
    meta.json            # step, epoch, data position, ...; written last
```

A backup directory counts only once its `meta.json` exists, and `latest` is
replaced (write to a temporary name, then rename) only after that, so a
process killed mid-save leaves the previous backup as the latest one.
Older backups are deleted only after `latest` points past them. Only the
chief writes here; the other workers write the same checkpoint into a
temporary directory of their own and delete it (TensorFlow needs every
worker to take part in saving). Paths may be local or any filesystem
`tf.io.gfile` knows (`gs://...`); every worker must be able to read the
directory (a shared filesystem) to restore.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Optional, Tuple

POINTER = "latest"
META = "meta.json"
STATE = "state"
_NAME = re.compile(r"^ckpt-(\d+)-(\d+)$")


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _is_local(path: str) -> bool:
    return "://" not in path


def _write_text(path: str, text: str) -> None:
    """Writes a small file so that it is complete or absent (temp file + rename)."""
    temp = f"{path}.tmp-{os.getpid()}"
    if _is_local(path):
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        _fsync_dir(os.path.dirname(path) or ".")
        return
    gfile = _gfile()
    with gfile.GFile(temp, "w") as handle:
        handle.write(text)
    gfile.rename(temp, path, overwrite=True)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    gfile = _gfile()
    try:
        if not gfile.exists(path):
            return None
        with gfile.GFile(path, "r") as handle:
            value = json.loads(handle.read())
        return value if isinstance(value, dict) else None
    except (ValueError, OSError):
        return None
    except Exception as exc:  # noqa: BLE001 - tf.errors.OpError without importing tf here
        if type(exc).__module__.startswith("tensorflow"):
            return None
        raise


class BackupStore:
    """Reads and writes the backups of one training run.

    Args:
        directory: The user's backup directory.
        is_chief: Whether this process writes to `directory`.
        worker_index: This worker's index (names its temporary directory).
        keep: How many complete backups to keep (at least 1).
    """

    def __init__(self, directory: str, *, is_chief: bool, worker_index: int = 0, keep: int = 1):
        self.directory = str(directory)
        self.is_chief = is_chief
        self.worker_index = worker_index
        self.keep = max(1, int(keep))

    # -- reading ------------------------------------------------------------
    def _complete(self) -> List[Tuple[Tuple[int, int], str]]:
        gfile = _gfile()
        if not gfile.isdir(self.directory):
            return []
        found = []
        for name in gfile.listdir(self.directory):
            name = name.rstrip("/")
            match = _NAME.match(name)
            if match and gfile.exists(os.path.join(self.directory, name, META)):
                found.append(((int(match.group(1)), int(match.group(2))), name))
        return sorted(found)

    def latest(self) -> Optional[Tuple[str, Dict[str, Any]]]:
        """The newest complete backup as `(state prefix, metadata)`, or None."""
        pointer = _read_json(os.path.join(self.directory, POINTER))
        candidates = [name for _, name in reversed(self._complete())]
        if pointer and pointer.get("name") in candidates:
            candidates.remove(pointer["name"])
            candidates.insert(0, pointer["name"])
        for name in candidates:
            meta = _read_json(os.path.join(self.directory, name, META))
            if meta is not None:
                return os.path.join(self.directory, name, STATE), meta
        return None

    # -- writing ------------------------------------------------------------
    def save(self, step: int, write_state: Callable[[str], Any], meta: Dict[str, Any]) -> str:
        """Writes one backup; every worker calls it at the same step.

        Args:
            step: The global step (names the backup).
            write_state: Writes the checkpoint to the prefix it is given.
            meta: JSON-able metadata, written after the state.

        Returns:
            Where this worker wrote (a temporary directory, already deleted,
            on non-chief workers).
        """
        if not self.is_chief:
            temp = tempfile.mkdtemp(prefix=f"keras_dp_backup_worker{self.worker_index}_")
            try:
                write_state(os.path.join(temp, STATE))
            finally:
                shutil.rmtree(temp, ignore_errors=True)
            return temp
        gfile = _gfile()
        gfile.makedirs(self.directory)
        entries = [e.rstrip("/") for e in gfile.listdir(self.directory)]
        serials = [int(m.group(2)) for m in map(_NAME.match, entries)
                   if m and int(m.group(1)) == int(step)]
        # A new name even for a step saved before: the complete backup stays
        # intact until the new one is.
        name = f"ckpt-{int(step):09d}-{max(serials, default=-1) + 1}"
        target = os.path.join(self.directory, name)
        gfile.makedirs(target)
        write_state(os.path.join(target, STATE))
        _write_text(os.path.join(target, META), json.dumps(meta, indent=1, sort_keys=True))
        _write_text(os.path.join(self.directory, POINTER), json.dumps({"name": name}))
        self._prune(keep_name=name)
        return target

    def _prune(self, keep_name: str) -> None:
        """Deletes unfinished backups and complete ones beyond `keep`."""
        gfile = _gfile()
        complete = [name for _, name in self._complete()]
        kept = set(complete[-self.keep:]) | {keep_name}
        for entry in gfile.listdir(self.directory):
            entry = entry.rstrip("/")
            if _NAME.match(entry) and entry not in kept:
                gfile.rmtree(os.path.join(self.directory, entry))

    def clean_unfinished(self) -> None:
        """Deletes backups a killed process left half-written (chief only)."""
        if not self.is_chief or not _gfile().isdir(self.directory):
            return
        gfile = _gfile()
        complete = {name for _, name in self._complete()}
        for entry in gfile.listdir(self.directory):
            entry = entry.rstrip("/")
            path = os.path.join(self.directory, entry)
            if (_NAME.match(entry) and entry not in complete) or ".tmp-" in entry:
                if gfile.isdir(path):
                    gfile.rmtree(path)
                else:
                    gfile.remove(path)

    def delete_all(self) -> None:
        """Removes every backup (chief only), then the directory if it is empty."""
        if not self.is_chief:
            return
        gfile = _gfile()
        if not gfile.isdir(self.directory):
            return
        for entry in gfile.listdir(self.directory):
            entry = entry.rstrip("/")
            path = os.path.join(self.directory, entry)
            if _NAME.match(entry):
                gfile.rmtree(path)
            elif entry == POINTER or entry.startswith(POINTER + ".tmp-"):
                gfile.remove(path)
        if not gfile.listdir(self.directory):
            gfile.rmtree(self.directory)
