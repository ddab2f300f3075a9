"""Two workers fall back past a damaged backup together (issue 12, section 1).

Both workers check the same files on the shared `backup_dir`, compare their choice
through TensorFlow's coordination service, and restore the same older backup.
"""

import re

import pytest

from _launch import LaunchRun
from keras_dp.callbacks._backup_store import BackupStore
from test_backup_damage import flip_bytes
from test_train_multiworker import (ARGS, JOB_WORKER, max_diff, uninterrupted,  # noqa: F401
                                    weights, worker_output)

pytestmark = pytest.mark.multiprocess


def test_two_workers_restore_the_same_older_backup(tf, uninterrupted, tmp_path):  # noqa: F811
    base, _ = uninterrupted
    out = tmp_path / "out"
    command = [JOB_WORKER, "--chdir", str(tmp_path), "--signal", "7", "SIGKILL", "1", "0",
               "--", "--output-dir", str(out), "--sample-tokens", "0", *ARGS]
    killed = LaunchRun(["-n", "2", *command])
    assert killed.finish(300) != 0, killed.text()[-6000:]
    newest, older = BackupStore(str(out / "backup"), is_chief=False).list()
    assert (newest.step, older.step) == (6, 3)
    flip_bytes(str(out / "backup"), newest.name)

    again = LaunchRun(["-n", "2", JOB_WORKER, "--chdir", str(tmp_path), *command[8:]])
    assert again.finish(300) == 0, again.text()[-6000:]
    text = again.text()
    assert "Traceback" not in text
    assert len(re.findall("cannot use the backup", text)) == 1  # the chief says it, once
    assert f"{newest.name}: state.data-00000-of-00001 has changed bytes" in text
    assert f"restoring the older backup {older.name} (step 3) instead" in text
    for index in (0, 1):
        assert "restored the backup of step 3" in worker_output(text, index), text[-6000:]
    diff = max_diff(weights(out), weights(base / "w0" / "out"))
    print(f"2 workers past a damaged backup: max abs diff to the uninterrupted run {diff:.2e}")
    assert diff <= 1e-5
