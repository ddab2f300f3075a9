"""Writing files so that a full or read-only disk costs nothing already saved.

Small helpers shared by the backups and the job's final save: atomic writes
(temporary name, then rename), telling a refused write (no space, read-only,
no permission) from other errors, and the free space, in words.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any, Callable


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def is_local(path: str) -> bool:
    """Whether `path` is on a local filesystem (not `gs://...` and the like)."""
    return "://" not in path


def write_text(path: str, text: str) -> None:
    """Writes a small file so that it is complete or absent (temp file + rename)."""
    temp = f"{path}.tmp-{os.getpid()}"
    try:
        if is_local(path):
            with open(temp, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
            fsync_dir(os.path.dirname(path) or ".")
            return
        gfile = _gfile()
        with gfile.GFile(temp, "w") as handle:
            handle.write(text)
        gfile.rename(temp, path, overwrite=True)
    except BaseException:
        remove_quietly(temp)
        raise


def remove_quietly(path: str) -> None:
    """Removes a file or directory if it is there, ignoring errors (used while failing)."""
    try:
        if is_local(path):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                os.remove(path)
        elif _gfile().exists(path):
            (_gfile().rmtree if _gfile().isdir(path) else _gfile().remove)(path)
    except Exception:  # noqa: BLE001 - best effort while reporting another error
        pass


def fsync_dir(path: str) -> None:
    """Flushes a directory's entries (a rename) to disk, where the OS allows it."""
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


def write_atomically(path: str, write: Callable[[str], Any], suffix: str = "") -> None:
    """Calls `write(temp)` for a temporary name next to `path`, then renames it to `path`.

    A failure (a full disk) leaves any previous `path` untouched and removes
    the partial file. `suffix` ends the temporary name (Keras insists on
    `.keras` for `model.save`).
    """
    directory, base = os.path.split(path)
    temp = os.path.join(directory, f".{base}.tmp-{os.getpid()}{suffix}")
    try:
        write(temp)
        if is_local(path):
            os.replace(temp, path)
            fsync_dir(directory or ".")
        else:
            _gfile().rename(temp, path, overwrite=True)
    except BaseException:
        remove_quietly(temp)
        raise


def first_line(exc: BaseException) -> str:
    """The first line of an error's message, without TensorFlow's op decorations."""
    text = str(getattr(exc, "message", None) or exc).strip().splitlines()
    text = text[0] if text else type(exc).__name__
    text = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:\w+\]$", "", text)
    return text if len(text) <= 400 else text[:150] + " ... " + text[-245:]


def is_io_error(exc: BaseException) -> bool:
    """An error of the filesystem, or TensorFlow's report of one."""
    if isinstance(exc, OSError):
        return True
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - this module is only used with TF
        return False
    return isinstance(exc, tf.errors.OpError)


_STORAGE_WORDS = ("no space left", "read-only file system", "permission denied",
                  "disk quota exceeded", "input/output error", "file too large")


def is_storage_error(exc: BaseException) -> bool:
    """Whether `exc` means the disk refused a write (full, read-only, no permission).

    A collective that failed during a save (a peer died) is NOT one: it must
    reach keras_dp's fault handling unchanged.
    """
    if isinstance(exc, OSError):
        return True
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, (tf.errors.PermissionDeniedError, tf.errors.ResourceExhaustedError)):
        text = str(exc).lower()
        # ResourceExhausted is also "out of memory": only the disk's kind counts.
        return isinstance(exc, tf.errors.PermissionDeniedError) or any(
            word in text for word in _STORAGE_WORDS)
    if isinstance(exc, tf.errors.OpError):
        text = str(exc).lower()
        return any(word in text for word in _STORAGE_WORDS)
    return False


def free_space(path: str) -> str:
    """How much room is left on the filesystem of `path`, in words (local paths only)."""
    if "://" in path:
        return "free space unknown (not a local filesystem)"
    probe = os.path.abspath(path)
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return "free space unknown"
    return f"{size_words(usage.free)} free of {size_words(usage.total)}"


def size_words(count: int) -> str:
    """A size in bytes, for people ("3.2 MiB")."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count:,} byte{'s' if count != 1 else ''}"
