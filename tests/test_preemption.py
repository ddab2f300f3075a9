"""keras_dp.preemption in one process (the multi-worker protocol runs in test_fault_tolerance)."""

import os
import signal

from keras_dp.fault import EXIT_PREEMPTED
from keras_dp.preemption import Preempted, PreemptionWatcher


def test_sigterm_stops_a_single_process_at_the_current_step(tf):
    watcher = PreemptionWatcher(tf.distribute.get_strategy()).start()
    try:
        assert not watcher.should_stop(3)
        os.kill(os.getpid(), signal.SIGTERM)
        assert watcher.pending
        assert watcher.should_stop(4) and not watcher.should_stop(3)
        assert not watcher.pending
    finally:
        watcher.stop()
    assert signal.getsignal(signal.SIGTERM) is not watcher._on_signal


def test_a_signal_is_held_back_while_training_and_the_handler_restored(tf):
    received = []
    handler = lambda signum, frame: received.append(signum)  # noqa: E731
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        watcher = PreemptionWatcher(tf.distribute.get_strategy()).start()
        os.kill(os.getpid(), signal.SIGTERM)
        assert received == [] and watcher.pending  # held back while training
        watcher.stop()
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_preempted_exits_with_the_preemption_code():
    exc = Preempted(12, "/backups")
    assert isinstance(exc, SystemExit) and exc.code == EXIT_PREEMPTED == 75
    assert "after step 12" in str(exc) and "/backups" in str(exc)
