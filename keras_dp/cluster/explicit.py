"""`KERAS_DP_WORKERS` (every worker's `host:port`, worker 0 the chief) and `KERAS_DP_TASK_INDEX`."""

from __future__ import annotations

import dataclasses
from typing import List, Mapping, Optional

from keras_dp.cluster.base import SOURCE_VARIABLE, ClusterEnvironment, local_placement, read_int
from keras_dp.cluster.registry import _register
from keras_dp.cluster.spec import ClusterInfo, check_no_duplicates, parse_address
from keras_dp.errors import ClusterConfigError

WORKERS = "KERAS_DP_WORKERS"
TASK_INDEX = "KERAS_DP_TASK_INDEX"


class ExplicitEnvironment(ClusterEnvironment):
    """Worker addresses (and optionally this task's index) given by the user."""

    name = "explicit"
    title = "KERAS_DP_WORKERS"
    address_variable = WORKERS
    variables = (WORKERS, TASK_INDEX)
    absent = (f"asks for explicit addresses but {WORKERS} is not set",
              f"set {WORKERS}=host:port,host:port, or unset {SOURCE_VARIABLE}")
    #: The launcher the index comes from, if any (set by the resolver).
    rank_source: Optional[ClusterEnvironment] = None

    @classmethod
    def detect(cls, environ: Mapping[str, str]) -> bool:
        return bool(str(environ.get(WORKERS, "")).strip())

    def addresses(self, port_base: Optional[int] = None) -> List[str]:
        raw = self.environ.get(WORKERS, "")
        items = [item.strip() for item in str(raw).replace(";", ",").split(",") if item.strip()]
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
        index = read_int(self.environ, TASK_INDEX, minimum=0, fix=f"set {TASK_INDEX} to this "
                         f"process's position in {WORKERS}, counting from 0")
        count = self.world_size()
        return self.checked_rank(
            index, f"index {index} is out of range for the {count} workers in {WORKERS} (valid: "
            f"0-{count - 1})", f"set {TASK_INDEX} between 0 and {count - 1}, or add this "
            f"process's address to {WORKERS}")

    def world_size(self) -> int:
        return len(self.addresses())

    def rank_variable(self) -> str:
        return self.rank_source.rank_variable() if self.rank_source else TASK_INDEX

    def rank(self) -> int:
        if self.rank_source is not None:
            return self.rank_source.rank()
        index = self.task_index()
        if index is None:
            raise ClusterConfigError(
                f"is not set, and no launcher (SLURM, MPI, Kubernetes) tells this process's "
                f"index among the {self.world_size()} workers of {WORKERS}", variable=TASK_INDEX,
                fix=f"set {TASK_INDEX} to this process's position in {WORKERS}, counting from 0 "
                    "(worker 0 is the chief)")
        return index

    def local_rank(self) -> int:
        source = self.rank_source
        return source.local_rank() if source else local_placement(self.addresses(), self.rank())[0]

    def local_size(self) -> int:
        source = self.rank_source
        return source.local_size() if source else local_placement(self.addresses(), self.rank())[1]

    def used_variables(self) -> List[str]:
        names = super().used_variables()
        return names + (self.rank_source.used_variables() if self.rank_source else [])

    def notes(self) -> List[str]:
        source = self.rank_source
        return [f"task index from {source.title} ({source.rank_variable()})"] if source else []

    def cluster_info(self, port_base: int, exchange=None, notes=()) -> ClusterInfo:
        info = super().cluster_info(port_base, notes=notes)
        return info if info.cluster else dataclasses.replace(info, notes=tuple(notes))


_register(ExplicitEnvironment, priority=400)
