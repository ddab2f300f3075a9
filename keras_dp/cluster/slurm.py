"""SLURM job steps (`srun`): node list × `KERAS_DP_PORT_BASE` + local index (docs/cluster.md)."""

from __future__ import annotations

from typing import List, Mapping, Optional, Tuple

from keras_dp.cluster.base import ClusterEnvironment, ports_fit, read_int
from keras_dp.cluster.registry import register_environment
from keras_dp.cluster.hostlist import expand_hostlist, expand_tasks_per_node
from keras_dp.errors import ClusterConfigError

# Step ids of the batch script and the external container: not inside an `srun` step.
_NON_STEP_IDS = {"batch", "extern", "interactive", "4294967294", "4294967295",
                 "4294967291", "4294967292", "4294967290"}
_ONE_STEP = "use the SLURM_STEP_* variables of one step (srun sets them together)"


def _first(environ: Mapping[str, str], names: Tuple[str, ...]) -> Optional[str]:
    return next((name for name in names if str(environ.get(name, "")).strip()), None)


class SlurmEnvironment(ClusterEnvironment):
    """Tasks of a SLURM job step."""

    name = "slurm"
    title = "SLURM"
    variables = ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_STEP_NODELIST",
                 "SLURM_JOB_NODELIST", "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE",
                 "SLURM_LOCALID", "SLURM_NODEID", "SLURM_STEP_ID", "SLURM_DISTRIBUTION",
                 "SLURM_NPROCS", "SLURM_NODELIST", "SLURM_STEPID", "SLURM_JOB_ID", "SLURM_JOBID")
    address_variable = "SLURM_STEP_NODELIST"
    SIZE_VARIABLES = ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS")
    NODELIST_VARIABLES = ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
    TASKS_PER_NODE_VARIABLES = ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")

    @classmethod
    def in_allocation_only(cls, environ: Mapping[str, str]) -> bool:
        """True inside an sbatch/salloc shell that is not an `srun` step."""
        if "SLURM_JOB_ID" not in environ and "SLURM_JOBID" not in environ:
            return False
        step = environ.get("SLURM_STEP_ID", environ.get("SLURM_STEPID"))
        if step is not None:
            return str(step).strip().lower() in _NON_STEP_IDS
        return "SLURM_STEP_NUM_TASKS" not in environ

    @classmethod
    def undetected_notes(cls, environ: Mapping[str, str]) -> List[str]:
        if cls.in_allocation_only(environ) and "SLURM_PROCID" in environ:
            return ["inside a SLURM allocation but not in an srun step: this process "
                    "trains alone; start it with srun to use every task"]
        return []

    @classmethod
    def detect(cls, environ: Mapping[str, str]) -> bool:
        return ("SLURM_PROCID" in environ and _first(environ, cls.SIZE_VARIABLES) is not None
                and not cls.in_allocation_only(environ))

    def rank(self) -> int:
        rank, size = read_int(self.environ, "SLURM_PROCID", minimum=0), self.world_size()
        return self.checked_rank(rank, f"task {rank} is out of range for a step of {size} tasks "
                                 f"({self._size_variable()}={size})",
                                 "launch with srun so SLURM sets consistent task variables")

    def _size_variable(self) -> str:
        return _first(self.environ, self.SIZE_VARIABLES) or "SLURM_STEP_NUM_TASKS"

    def world_size(self) -> int:
        return read_int(self.environ, self._size_variable(), minimum=1)

    def nodes(self) -> List[str]:
        """Host names of the step's nodes, in SLURM order."""
        name = _first(self.environ, self.NODELIST_VARIABLES)
        if name is None:
            if self.world_size() == 1:
                return ["localhost"]
            raise ClusterConfigError(
                "no node list is set for a multi-task step", variable="SLURM_STEP_NODELIST",
                fix="launch the tasks with srun, which sets SLURM_STEP_NODELIST")
        return expand_hostlist(self.environ[name], variable=name)

    def tasks_per_node(self) -> List[int]:
        """Task count of every node, aligned with `nodes()`, checked against the size."""
        nodes, size = self.nodes(), self.world_size()
        name = _first(self.environ, self.TASKS_PER_NODE_VARIABLES)
        if name is None:
            if size % len(nodes):
                raise ClusterConfigError(
                    f"{size} tasks do not divide evenly over {len(nodes)} nodes and "
                    "SLURM_STEP_TASKS_PER_NODE is not set", variable=self._size_variable(),
                    received=size, fix="launch with srun, which sets SLURM_STEP_TASKS_PER_NODE")
            return [size // len(nodes)] * len(nodes)
        counts = expand_tasks_per_node(self.environ[name], variable=name)
        nodelist = self.environ.get(_first(self.environ, self.NODELIST_VARIABLES) or "", "")
        for wrong, problem in (
                (len(counts) != len(nodes), f"lists tasks for {len(counts)} nodes but the "
                                            f"node list {nodelist!r} has {len(nodes)} nodes"),
                (sum(counts) != size,
                 f"adds up to {sum(counts)} tasks but {self._size_variable()}={size}"),
                (any(count < 1 for count in counts), "has a node with no tasks")):
            if wrong:
                raise ClusterConfigError(problem, variable=name, received=self.environ[name],
                                         fix=_ONE_STEP)
        return counts

    def placement(self) -> List[Tuple[int, int]]:
        """For every rank, its `(node index, local index)`."""
        counts = self.tasks_per_node()
        distribution = str(self.environ.get("SLURM_DISTRIBUTION", "block")).split(",")[0]
        distribution = distribution.split(":")[0].strip().lower() or "block"
        slots = [(node, local) for node, count in enumerate(counts) for local in range(count)]
        if distribution == "cyclic":  # one task per node in turn
            slots.sort(key=lambda slot: (slot[1], slot[0]))
        elif distribution not in ("block", "pack", "nopack"):
            raise ClusterConfigError(
                f"task distribution {distribution!r} is not supported",
                variable="SLURM_DISTRIBUTION", received=self.environ.get("SLURM_DISTRIBUTION"),
                fix="use srun --distribution=block (the default) or cyclic, or list the "
                    "addresses yourself in KERAS_DP_WORKERS")
        return slots

    def local_rank(self) -> int:
        node, local = self.placement()[self.rank()]
        for name, derived, what in (("SLURM_LOCALID", local, "is local task {} on its node"),
                                    ("SLURM_NODEID", node, "runs on node {}")):
            if name in self.environ:
                given = read_int(self.environ, name, minimum=0)
                if given != derived:
                    raise ClusterConfigError(
                        f"says task {self.rank()} {what.format(given)}, but the node list "
                        f"and tasks-per-node place it so that it {what.format(derived)}",
                        variable=name, received=self.environ[name], fix="use the variables "
                        "of one srun step, with block or cyclic distribution")
        return local

    def local_size(self) -> int:
        node, _ = self.placement()[self.rank()]
        return self.tasks_per_node()[node]

    def addresses(self, port_base: int) -> List[str]:
        nodes, counts = self.nodes(), self.tasks_per_node()
        ports_fit(port_base, max(counts))
        return [f"{nodes[node]}:{port_base + local}" for node, local in self.placement()]


register_environment(SlurmEnvironment, priority=200)
