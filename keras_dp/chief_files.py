"""The chief writes each file, atomically; the others write elsewhere (docs/dropin_writes.md)."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import uuid
from typing import Iterator, Tuple

from keras_dp.fault import worker_position

#: Suffixes kept at the end of a temporary name (Keras checks them).
SUFFIXES = (".weights.h5", ".weights.json", ".keras", ".hdf5", ".h5")
#: Marks keras_dp's temporary names next to a target (`.NAME.keras_dp-tmp-...`).
TEMP_MARK = ".keras_dp-tmp-"


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def is_local(path: str) -> bool:
    """Whether `path` is on a local filesystem (not `gs://...` and the like)."""
    return "://" not in str(path)


def position(model=None) -> Tuple[int, int, bool]:
    """`(worker index, number of workers, is chief)` in `model`'s strategy, else keras_dp's."""
    found = worker_position(getattr(model, "distribute_strategy", None))
    if found[1] > 1:
        return found
    from keras_dp.multi_worker import _multi_worker

    return worker_position(_multi_worker.get("strategy"))


def private_dir(kind: str, index: int, *, at_exit: bool = False) -> str:
    """A new temporary directory `keras_dp_<kind>_worker<index>_...`; `at_exit`: deleted at exit."""
    path = tempfile.mkdtemp(prefix=f"keras_dp_{kind}_worker{index}_")
    if at_exit:
        atexit.register(shutil.rmtree, path, True)
    return path


@contextlib.contextmanager
def elsewhere(path, kind: str, index: int) -> Iterator[str]:
    """Yields `path`'s file name in a private temporary directory, deleted afterwards."""
    directory = private_dir(kind, index)
    try:
        yield os.path.join(directory, os.path.basename(str(path).rstrip("/")) or kind)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _split(path: str) -> Tuple[str, str, str]:
    directory, name = os.path.split(str(path).rstrip("/"))
    suffix = next((s for s in SUFFIXES if name.endswith(s) and name != s), "")
    return directory, name[:len(name) - len(suffix)], suffix


def temp_name(path: str) -> str:
    """A unique hidden name next to `path`, ending like it (`d/.ckpt.keras_dp-tmp-1-ab.keras`)."""
    directory, stem, suffix = _split(path)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return os.path.join(directory, f".{stem}{TEMP_MARK}{tag}{suffix}")


@contextlib.contextmanager
def atomic(path, *, directory: bool = False) -> Iterator[str]:
    """Yields a temporary name next to `path`; once written, it replaces `path` in one rename.

    With `directory=True` the writer makes a directory (a SavedModel). A remote
    directory or `hf://` is written in place (remote files are renamed with `tf.io.gfile`).
    On an exception nothing of the temporary name is left, and `path` is as it was.
    """
    path = str(path)
    if not is_local(path) and (directory or path.startswith("hf://")):
        yield path
        return
    temp = temp_name(path)
    try:
        yield temp
        if not is_local(path):
            _gfile().rename(temp, path, overwrite=True)
            return
        if directory and os.path.lexists(path):
            old = temp_name(path) + "-old"
            os.replace(path, old)
            os.replace(temp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, path)
    except BaseException:
        remove_quietly(temp)
        raise
    with contextlib.suppress(OSError):  # flush the rename to disk, where the OS allows it
        fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        with contextlib.suppress(OSError):
            os.fsync(fd)
        os.close(fd)


def remove_quietly(path: str) -> None:
    """Removes a file or directory if it is there, ignoring errors (used while failing)."""
    with contextlib.suppress(Exception):
        if not is_local(path):
            (_gfile().rmtree if _gfile().isdir(path) else _gfile().remove)(path)
        elif os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)


def write_text(path, text: str) -> None:
    """Writes a small file so that it is complete or absent (`atomic`, flushed to disk)."""
    with atomic(path) as temp, (open(temp, "w", encoding="utf-8") if is_local(temp)
                                else _gfile().GFile(temp, "w")) as handle:
        handle.write(text)
        if is_local(temp):
            handle.flush()
            os.fsync(handle.fileno())


def clean_stale(path: str) -> None:
    """Deletes temporary files an earlier, killed writer left next to local `path`."""
    directory, stem, _ = _split(path)
    if not is_local(path) or not os.path.isdir(directory or "."):
        return
    for entry in os.listdir(directory or "."):
        if entry.startswith(f".{stem}{TEMP_MARK}"):
            remove_quietly(os.path.join(directory, entry))
