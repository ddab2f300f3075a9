"""Where `BackupAndRestore` backups live: `backup_dir/ckpt-<step>-<n>/`, `latest`, the last K kept.
See docs/backups.md."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Optional, Tuple

from keras_dp.callbacks import _backup_verify as verify
from keras_dp.callbacks._storage import first_line, free_space, is_io_error, is_storage_error
from keras_dp.chief_files import (TEMP_MARK, _gfile, is_local, private_dir, remove_quietly,
                                  write_text)
from keras_dp.errors import KerasDPError

POINTER = "latest"
META = "meta.json"
STATE = "state"
DAMAGED = "damaged-"
_NAME = re.compile(r"^ckpt-(\d+)-(\d+)$")


class BackupWriteError(KerasDPError, OSError):
    """The disk refused a backup (full, read-only, no permission); the older ones are intact."""

    def __init__(self, path: str, cause: BaseException):
        super().__init__(f"could not write {path} ({first_line(cause)}; {free_space(path)})")


@dataclasses.dataclass
class Backup:
    """One backup directory, as found on disk (not yet checked)."""

    name: str                        # ckpt-<step>-<serial>
    step: int
    serial: int
    path: str
    prefix: str                      # of its TensorFlow checkpoint
    meta: Optional[Dict[str, Any]]   # None when absent or unreadable
    meta_problem: Optional[str]      # why, e.g. "meta.json is missing"


@dataclasses.dataclass
class Choice:
    """What `BackupStore.choose()` found: the newest intact backup, and the unusable ones."""

    backup: Optional[Backup]
    damaged: List[Tuple[str, str]]   # (name, what is wrong), newest first, newer than backup


def _load_json(path: str, what: str) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """`(value, None)`, or `(None, why not)`, e.g. "<what> is missing"."""
    gfile = _gfile()
    try:
        if not gfile.exists(path):
            return None, f"{what} is missing"
        with gfile.GFile(path, "rb") as handle:
            value = json.loads(handle.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None, f"{what} is not valid JSON (damaged)"
    except Exception as exc:  # noqa: BLE001 - OSError or tf.errors.OpError
        if not is_io_error(exc):
            raise
        return None, f"{what} cannot be read ({first_line(exc)})"
    if not isinstance(value, dict):
        return None, f"{what} is not a JSON object (damaged)"
    return value, None


class BackupStore:
    """Reads and writes the backups in `directory`; only the chief writes, `keep` are kept."""

    def __init__(self, directory: str, *, is_chief: bool, worker_index: int = 0, keep: int = 1):
        self.directory = str(directory)
        self.is_chief = is_chief
        self.worker_index = worker_index
        self.keep = max(1, int(keep))

    def _names(self) -> List[str]:
        gfile = _gfile()
        if not gfile.isdir(self.directory):
            return []
        return [entry.rstrip("/") for entry in gfile.listdir(self.directory)]

    def list(self) -> List[Backup]:
        """Every backup directory, newest first, with its `meta.json` (nothing verified)."""
        found = []
        for match in filter(None, map(_NAME.match, self._names())):
            path = os.path.join(self.directory, match.group(0))
            meta, why = _load_json(os.path.join(path, META), META)
            found.append(Backup(match.group(0), int(match.group(1)), int(match.group(2)), path,
                                os.path.join(path, STATE), meta, why))
        return sorted(found, key=lambda b: (b.step, b.serial), reverse=True)

    def _pointer(self) -> Tuple[Optional[str], Optional[str]]:
        value, why = _load_json(os.path.join(self.directory, POINTER), POINTER)
        if value is None:
            return None, None if why and why.endswith("missing") else why
        name = value.get("name")
        return (name, None) if isinstance(name, str) else (None, f"{POINTER} names no backup")

    def _unfinished(self, backups: List[Backup], pointer: Optional[str]) -> List[Backup]:
        """Directories of a save that never finished: no meta.json, newer than any complete one."""
        floor = max([(b.step, b.serial) for b in backups
                     if b.meta is not None or b.name == pointer], default=(-1, -1))
        return [b for b in backups if b.meta is None and b.meta_problem == f"{META} is missing"
                and (b.step, b.serial) > floor]

    def choose(self) -> Choice:
        """The newest backup exactly as written (a pure function of the files: workers agree)."""
        backups = self.list()
        pointer, pointer_problem = self._pointer()
        damaged: List[Tuple[str, str]] = []
        if pointer_problem:
            damaged.append((POINTER, pointer_problem))
        elif pointer is not None and pointer not in {b.name for b in backups}:
            damaged.append((pointer, f"the {POINTER} pointer names it but it does not exist"))
        unfinished = {b.name for b in self._unfinished(backups, pointer)}
        for backup in backups:
            if backup.name in unfinished:
                continue
            why = backup.meta_problem or verify.problem(backup.path, backup.meta, backup.prefix)
            if why is None:
                return Choice(backup, damaged)
            damaged.append((backup.name, why))
        return Choice(None, damaged)

    def save(self, step: int, write_state: Callable[[str], Any], meta: Dict[str, Any]) -> str:
        """Writes `write_state(prefix)`'s checkpoint, then `meta` (every worker); returns where.
        A refused write removes what it wrote and raises `BackupWriteError`."""
        if not self.is_chief:
            temp = None
            try:
                temp = private_dir("backup", self.worker_index)
                write_state(os.path.join(temp, STATE))
            except Exception as exc:  # noqa: BLE001 - only a refused write is handled
                if not is_storage_error(exc):
                    raise
                raise BackupWriteError(temp or tempfile.gettempdir(), exc) from exc
            finally:
                if temp:
                    shutil.rmtree(temp, ignore_errors=True)
            return temp
        target = self.directory
        try:
            gfile = _gfile()
            gfile.makedirs(self.directory)
            serials = [b.serial for b in self.list() if b.step == int(step)]
            # A new name even for a step saved before: that backup stays until this one is.
            name = f"ckpt-{int(step):09d}-{max(serials, default=-1) + 1}"
            target = os.path.join(self.directory, name)
            gfile.makedirs(target)
            write_state(os.path.join(target, STATE))
            files = [f.rstrip("/") for f in gfile.listdir(target) if f.startswith(STATE + ".")]
            meta = dict(meta, files={f: verify.file_digest(os.path.join(target, f))
                                     for f in sorted(files)})
            meta["checksum"] = verify.meta_checksum(meta)
            write_text(os.path.join(target, META), json.dumps(meta, indent=1, sort_keys=True))
        except Exception as exc:  # noqa: BLE001 - only a refused write is handled
            if target != self.directory:
                remove_quietly(target)
            if not is_storage_error(exc):
                raise
            raise BackupWriteError(target, exc) from exc
        try:
            write_text(os.path.join(self.directory, POINTER), json.dumps({"name": name}))
        except Exception as exc:  # noqa: BLE001 - the backup is complete; choose() finds it
            if not is_storage_error(exc):
                raise
        self._prune(keep_name=name)
        return target

    def _prune(self, keep_name: str) -> None:
        """Deletes all but the newest complete save of each of the `keep` newest steps."""
        newest_of_step: Dict[int, str] = {}
        for backup in self.list():  # newest first
            if backup.meta is not None:
                newest_of_step.setdefault(backup.step, backup.name)
        kept = set(list(newest_of_step.values())[:self.keep]) | {keep_name}
        for entry in self._names():
            if _NAME.match(entry) and entry not in kept:
                _gfile().rmtree(os.path.join(self.directory, entry))

    def clean_unfinished(self) -> None:
        """Deletes backups a killed process left half-written (chief only)."""
        if not self.is_chief or not _gfile().isdir(self.directory):
            return
        for backup in self._unfinished(self.list(), self._pointer()[0]):
            _gfile().rmtree(backup.path)
        for entry in self._names():
            if ".tmp-" in entry or TEMP_MARK in entry:   # the first: older releases'
                remove_quietly(os.path.join(self.directory, entry))

    def set_aside(self, choice: Choice) -> List[str]:
        """Renames (deletes if not local) `choice`'s damaged backups, points `latest` at its
        choice; returns where each went (chief only, once every worker has chosen)."""
        if not self.is_chief:
            return []
        moved = []
        try:
            for name, _ in choice.damaged:
                path = os.path.join(self.directory, name)
                if not _NAME.match(name) or not _gfile().isdir(path):
                    continue
                if is_local(path):
                    target = os.path.join(self.directory, DAMAGED + name)
                    while os.path.exists(target):
                        target += "+"
                    os.rename(path, target)
                    moved.append(target)
                else:
                    _gfile().rmtree(path)
                    moved.append(f"{path} deleted")
            pointer = os.path.join(self.directory, POINTER)
            if choice.backup is not None:
                write_text(pointer, json.dumps({"name": choice.backup.name}))
            elif _gfile().exists(pointer):
                _gfile().remove(pointer)
        except Exception as exc:  # noqa: BLE001 - a read-only directory: leave them
            if not is_storage_error(exc):
                raise
        return moved

    def delete_all(self) -> None:
        """Removes every backup (chief only), then the directory if it is empty."""
        gfile = _gfile()
        if not self.is_chief or not gfile.isdir(self.directory):
            return
        for entry in self._names():
            path = os.path.join(self.directory, entry)
            if _NAME.match(entry) or entry.startswith(DAMAGED):
                gfile.rmtree(path)
            elif entry == POINTER or entry.startswith((f"{POINTER}.tmp-",
                                                       f".{POINTER}{TEMP_MARK}")):
                gfile.remove(path)
        if not gfile.listdir(self.directory):
            gfile.rmtree(self.directory)


def describe(choice: Choice, directory: str, moved: List[str] = ()) -> Optional[str]:
    """The one message about the unusable backups of `choice` (None if there are none)."""
    if not choice.damaged:
        return None
    problems = "; ".join(f"{name}: {why}" for name, why in choice.damaged)
    older = any(_NAME.match(name) for name, _ in choice.damaged)
    then = "no usable backup is left, so training starts over from the beginning" \
        if choice.backup is None else (f"restoring the {'older ' if older else ''}backup "
                                       f"{choice.backup.name} (step {choice.backup.step}) instead")
    aside = f" Moved aside: {', '.join(moved)}." if moved else ""
    return (f"keras_dp: cannot use the backup{'s' if len(choice.damaged) > 1 else ''} in "
            f"{directory} ({problems}); {then}.{aside}")
