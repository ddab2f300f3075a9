"""Preemption: a SIGTERM on any worker stops all at one common step (docs/fault_tolerance.md)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import sys
import threading
import time
from typing import Optional

from keras_dp.fault import EXIT_PREEMPTED, worker_position

log = logging.getLogger("keras_dp")

_generations = itertools.count()
_active = []
#: Seconds the signalled worker waits for the acknowledgements (a silent worker is gone).
ACK_TIMEOUT = 60.0


class Preempted(SystemExit):
    """Exits with `EXIT_PREEMPTED` after the backup of `step` (`except Exception` lets it by)."""

    def __init__(self, step: int, where: str = ""):
        super().__init__(EXIT_PREEMPTED)
        self.step = step
        self.where = where

    def __str__(self) -> str:
        return (f"preempted: stopped after step {self.step}"
                + (f", backup in {self.where}" if self.where else "")
                + f"; exit code {EXIT_PREEMPTED}. Relaunch the same command to resume.")


class PreemptionWatcher:
    """Agrees on a common stop step when any worker of `strategy` receives SIGTERM."""

    def __init__(self, strategy):
        self.index, self.count, _ = worker_position(strategy)
        self._previous = {}
        # The signal, the agreed stop step, the step training stopped at.
        self._received = self._target = self._stopped_at = None
        self._closing = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "PreemptionWatcher":
        """Installs the signal handlers and, with several workers, the watcher thread."""
        for stale in list(_active):
            stale.stop()
        self._prefix = f"keras_dp/preemption/{next(_generations)}"
        if threading.current_thread() is threading.main_thread():
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_signal)
        else:
            log.warning("keras_dp: training runs outside the main thread, so SIGTERM "
                        "cannot be caught; a preemption will not save a backup")
        if self.count > 1:
            self._thread = threading.Thread(target=self._watch, daemon=True,
                                            name="keras_dp-preemption-watcher")
            self._thread.start()
        _active.append(self)
        return self

    def stop(self) -> None:
        """Restores the previous signal handlers and ends the watcher thread."""
        for signum, previous in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, previous)
        self._previous.clear()
        self._closing.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        if self in _active:
            _active.remove(self)

    @property
    def pending(self) -> bool:
        """A signal arrived but training ended before the common step."""
        return self._received is not None and self._stopped_at is None

    def should_stop(self, step: int) -> bool:
        """Called after each step with the steps done; True (on all workers at once): save, stop."""
        if self._received is not None and self._target is None:
            self._propose(step)
        if self._target is not None and step >= self._target:
            self._stopped_at = step
            return True
        return False

    def _on_signal(self, signum, frame):  # noqa: ARG002 - signal handler signature
        if self._received is not None:
            # A second signal: stop waiting for the common step.
            signal.signal(signum, self._previous.get(signum) or signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self._received = signum

    def _propose(self, step: int) -> None:
        name = signal.Signals(self._received).name
        if self.count <= 1:
            self._target = step
            log.warning("keras_dp: %s received; saving a backup after step %d", name, step)
            return
        from tensorflow.python.eager import context
        from tensorflow.python.framework import errors

        target = step + 1
        try:
            context.context().set_config_key_value(self._prefix + "/step", str(target))
        except errors.AlreadyExistsError:
            self._target = int(context.context().get_config_key_value(
                self._prefix + "/step", timeout_in_ms=int(ACK_TIMEOUT * 1000)))
            return
        self._target = target
        sys.stderr.write(f"keras_dp: worker {self.index} received {name}: all {self.count} "
                         f"workers save a backup after step {target} and stop\n")
        started = time.monotonic()
        for index in range(self.count):
            left = max(1.0, ACK_TIMEOUT - (time.monotonic() - started))
            try:
                context.context().get_config_key_value(
                    f"{self._prefix}/ack/{index}", timeout_in_ms=int(left * 1000))
            except errors.OpError as exc:
                log.warning("keras_dp: worker %d did not acknowledge the stop step (%s); "
                            "it may be gone", index, str(exc).splitlines()[0])

    def _watch(self) -> None:
        """Waits for the stop step (any worker may publish it), then acknowledges it."""
        from tensorflow.python.eager import context
        from tensorflow.python.framework import errors

        while not self._closing.is_set():
            try:
                value = context.context().get_config_key_value(
                    self._prefix + "/step", timeout_in_ms=1000)
            except errors.DeadlineExceededError:
                continue
            except Exception:  # noqa: BLE001 - the service is gone: nothing to watch
                return
            self._target = int(value)
            with contextlib.suppress(Exception):
                context.context().set_config_key_value(f"{self._prefix}/ack/{self.index}", "1")
            return
