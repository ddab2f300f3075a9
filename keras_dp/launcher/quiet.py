"""TensorFlow's C++ start-up notices, hidden unless the user set `TF_CPP_MIN_LOG_LEVEL`.

See docs/launch.md, "TensorFlow's start-up notices".
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from typing import Iterator, Mapping, Optional

from keras_dp import early

LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
#: TensorFlow's INFO lines off, its warnings and errors on.
DEFAULT_LEVEL = "1"

_NOTICE = re.compile("|".join([
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"\] oneDNN custom operations are on\.",
    r"\] oneDNN supports DT_\w+ only on platforms with AVX-512\.",
    r"\] This TensorFlow binary is optimized to use available CPU instructions",
    r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate",
    r"\] Unable to register cu(DNN|FFT|BLAS) factory",
    r"\] computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
]))


def is_notice(line: str) -> bool:
    """Whether `line` is one of TensorFlow's start-up notices (oneDNN, absl, CUDA, TensorRT)."""
    return _NOTICE.search(line) is not None


def wanted(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether to hide the notices: the user did not set `TF_CPP_MIN_LOG_LEVEL`."""
    return LEVEL_VARIABLE not in (os.environ if environ is None else environ)


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Drops notice lines written to file descriptor 2 (C++ code too) inside the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def copy():
        with os.fdopen(read_end, "rb") as pipe:
            for raw in pipe:
                if not is_notice(raw.decode("utf-8", errors="replace")):
                    os.write(saved, raw)

    thread = threading.Thread(target=copy, daemon=True, name="keras_dp-quiet-stderr")
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the copy ends
        thread.join(5.0)
        if not thread.is_alive():
            os.close(saved)


def hide_import_notices() -> None:
    """Unless the user set `TF_CPP_MIN_LOG_LEVEL`, sets it and filters the coming TF import."""
    if not wanted() or "tensorflow" in sys.modules:
        return
    os.environ[LEVEL_VARIABLE] = DEFAULT_LEVEL
    early.TensorFlowImportHook(filtered_stderr)
