"""Explicit variables: `KERAS_DP_WORKERS` and `KERAS_DP_TASK_INDEX`.

They mean what tf-models' `--worker_hosts` and `--task_index` mean: the
comma-separated addresses of all workers (worker 0 is the chief), and this
process's position in that list. The index may instead come from a launcher
(`SLURM_PROCID`, `OMPI_COMM_WORLD_RANK`, `JOB_COMPLETION_INDEX`, ...).
"""

from __future__ import annotations

from typing import List, Mapping, Optional

from keras_dp.cluster.base import read_int
from keras_dp.cluster.spec import check_no_duplicates, parse_address
from keras_dp.errors import ClusterConfigError

WORKERS = "KERAS_DP_WORKERS"
TASK_INDEX = "KERAS_DP_TASK_INDEX"


class ExplicitEnvironment:
    """Worker addresses (and optionally this task's index) given by the user."""

    name = "explicit"
    title = "KERAS_DP_WORKERS"
    detect_variables = (WORKERS, TASK_INDEX)

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    @classmethod
    def detect(cls, environ: Mapping[str, str]) -> bool:
        return bool(str(environ.get(WORKERS, "")).strip())

    def addresses(self) -> List[str]:
        """The validated worker list."""
        raw = self.environ.get(WORKERS, "")
        items = [item.strip() for item in str(raw).replace(";", ",").split(",")]
        items = [item for item in items if item]
        if not items:
            raise ClusterConfigError(
                "the worker list is empty", variable=WORKERS, received=raw,
                fix="set KERAS_DP_WORKERS=host1:port,host2:port (one entry per process)")
        for i, item in enumerate(items):
            parse_address(item, variable=WORKERS, field=f"entry {i}", received=raw)
        check_no_duplicates(items, variable=WORKERS, received=raw)
        return items

    def task_index(self) -> Optional[int]:
        """KERAS_DP_TASK_INDEX if set, validated against the worker count."""
        if TASK_INDEX not in self.environ:
            return None
        index = read_int(self.environ, TASK_INDEX, minimum=0,
                         fix="set KERAS_DP_TASK_INDEX to this process's position "
                             "in KERAS_DP_WORKERS, counting from 0")
        count = len(self.addresses())
        if index >= count:
            raise ClusterConfigError(
                f"index {index} is out of range for the {count} workers in "
                f"{WORKERS} (valid: 0-{count - 1})", variable=TASK_INDEX,
                received=self.environ[TASK_INDEX],
                fix=f"set {TASK_INDEX} between 0 and {count - 1}, or add this "
                    f"process's address to {WORKERS}")
        return index
