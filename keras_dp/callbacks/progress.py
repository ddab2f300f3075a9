"""A progress display that only the chief shows: a rich bar on a terminal, else plain lines."""

from __future__ import annotations

import math
import sys
import time
from typing import Optional, TextIO

import keras

from keras_dp.callbacks.backup import is_replayed_step, steps_per_batch
from keras_dp.errors import ConfigError


class Progress(keras.callbacks.Callback):
    """Chief-only training progress (use with `fit(..., verbose=0)`).

    Args:
        total_steps: Steps the run will take (for the bar and the ETA).
        initial_step: Step the run starts at (when resuming).
        style: `"auto"` (rich on a terminal, else plain), `"rich"`, `"plain"` or `"none"`.
        bits_per: Also show the loss in bits per this unit (`"byte"`, `"token"`), or None.
        is_chief: Override (default: the current `keras_dp.scope()` context).
        interval: Seconds between plain lines.
        stream: Where to write (default stderr).
    """

    def __init__(self, total_steps: int, *, initial_step: int = 0, style: str = "auto",
                 bits_per: Optional[str] = None, is_chief: Optional[bool] = None,
                 interval: float = 10.0, stream: Optional[TextIO] = None):
        super().__init__()
        if style not in ("auto", "rich", "plain", "none"):
            raise ConfigError("unknown progress style", variable="style", received=style,
                              fix="use one of: auto, rich, plain, none")
        self.total_steps = int(total_steps)
        self.step = int(initial_step)
        self.bits_per = bits_per
        self.interval = float(interval)
        self.stream = stream or sys.stderr
        if is_chief is None:
            from keras_dp.current import current_context

            is_chief = getattr(current_context(), "is_chief", True)   # True alone
        if not is_chief:
            style = "none"
        elif style == "auto":
            style = "rich" if getattr(self.stream, "isatty", lambda: False)() else "plain"
        self.style = style
        self._progress = None
        self._task = None
        self._last_line = 0.0
        self._started = 0.0
        self.last_logs = {}

    def describe(self, logs) -> str:
        parts = []
        loss = logs.get("loss")
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
            if self.bits_per:
                parts.append(f"{loss / math.log(2):.3f} bits/{self.bits_per}")
        parts += [form.format(logs[key]) for key, form in (
            ("val_loss", "val_loss {:.4f}"), ("lr", "lr {:.2e}")) if key in logs]
        if "tokens_per_sec" in logs:
            parts.append(f"{logs['tokens_per_sec']:,.0f} tok/s")
        elif "examples_per_sec" in logs:
            parts.append(f"{logs['examples_per_sec']:,.1f} ex/s")
        return "  ".join(parts)

    def on_train_begin(self, logs=None):
        self._started = time.time()
        if self.style == "rich":
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress,
                                       TextColumn, TimeElapsedColumn, TimeRemainingColumn)
            from rich.console import Console

            self._progress = RichProgress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("<"), TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(file=self.stream), transient=False, refresh_per_second=4)
            self._progress.start()
            self._task = self._progress.add_task("train", total=self.total_steps,
                                                 completed=self.step, info="")

    def on_train_batch_end(self, batch, logs=None):
        if is_replayed_step(self.model, batch):
            return  # a step done before the backup was restored
        self.step += steps_per_batch(self.model)
        logs = {**self.last_logs, **(logs or {})}
        if self.style == "rich" and self._progress is not None:
            self._progress.update(self._task, completed=self.step, info=self.describe(logs))
        elif self.style == "plain":
            now = time.time()
            if now - self._last_line >= self.interval or self.step >= self.total_steps:
                self._last_line = now
                self._print(self.describe(logs))

    def on_epoch_end(self, epoch, logs=None):
        self.last_logs = {k: v for k, v in (logs or {}).items()
                          if k in ("tokens_per_sec", "examples_per_sec")}
        if self.style == "none" or "val_loss" not in (logs or {}):
            return
        val = logs["val_loss"]
        bits = f" ({val / math.log(2):.3f} bits/{self.bits_per})" if self.bits_per else ""
        self._print(f"validation loss {val:.4f}{bits}")

    def on_train_end(self, logs=None):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _print(self, text: str) -> None:
        text = f"step {self.step}/{self.total_steps}  {time.time() - self._started:.0f}s  {text}"
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(text, file=self.stream, flush=True)
