"""Storage errors in words (a refused write, an I/O error, the free space), for every writer."""

from __future__ import annotations

import os
import re
import shutil


def first_line(exc: BaseException) -> str:
    """The first line of an error's message, without TensorFlow's op decorations."""
    text = str(getattr(exc, "message", None) or exc).strip().splitlines()
    text = text[0] if text else type(exc).__name__
    text = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:\w+\]$", "", text)
    return text if len(text) <= 400 else text[:150] + " ... " + text[-245:]


def is_io_error(exc: BaseException) -> bool:
    """An error of the filesystem, or TensorFlow's report of one."""
    import tensorflow as tf

    return isinstance(exc, (OSError, tf.errors.OpError))


_STORAGE_WORDS = ("no space left", "read-only file system", "permission denied",
                  "disk quota exceeded", "input/output error", "file too large")


def is_storage_error(exc: BaseException) -> bool:
    """Whether the disk refused a write (full, read-only, no permission); not a lost peer."""
    if isinstance(exc, OSError):
        return True
    import tensorflow as tf

    # ResourceExhausted is also "out of memory": only the disk's kind counts.
    return isinstance(exc, tf.errors.PermissionDeniedError) or isinstance(
        exc, tf.errors.OpError) and any(word in str(exc).lower() for word in _STORAGE_WORDS)


def free_space(path: str) -> str:
    """How much room is left on the filesystem of `path`, in words (local paths only)."""
    if "://" in path:
        return "free space unknown (not a local filesystem)"
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
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
