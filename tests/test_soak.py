"""The kill-anywhere soak (`benchmarks/soak.py`), short: three faults of its kinds.

Each trial is `keras-dp launch -n 2 --max-restarts 2 -- keras-dp train ...` (the
soak's small job) where one worker signals itself at one moment of the first
attempt; it must end with exit 0, the uninterrupted run's weights (<= 1e-5),
and the launcher must react within 60 s of the fault. The full soak (random
faults, many trials) and its figures are in benchmarks/RESULTS.md.
"""

import os
import sys

import pytest

from _multiproc import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import soak  # noqa: E402

pytestmark = [pytest.mark.multiprocess, pytest.mark.soak]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return soak.reference(str(tmp_path_factory.mktemp("soak")))


@pytest.mark.parametrize("worker, signal, spec", [
    ("0", "SIGKILL", "backup:6"),       # the chief, inside a backup write
    ("1", "SIGSTOP", "mid:5:40"),       # frozen in the middle of step 6
    ("0", "SIGTERM", "validation:8"),   # preempted at a validation
], ids=["sigkill-chief-in-backup", "sigstop-mid-step", "sigterm-at-validation"])
def test_a_fault_anywhere_loses_nothing(reference, tmp_path, worker, signal, spec):
    fault = {"worker": worker, "signal": signal, "moment": spec.split(":")[0], "spec": spec}
    record = soak.run_trial(str(tmp_path / "trial"), fault, reference)
    print(f"{signal} worker {worker} at {spec}: exit {record['exit']}, detection "
          f"{record.get('detection')} s, recovery {record.get('recovery')} s, max abs diff "
          f"{record.get('max_abs_diff')}")
    assert record["fired"], "\n".join(record.get("tail", []))
    assert record["passed"], record.get("reasons") + record.get("tail", [])
    assert record["restarts"] >= 1
