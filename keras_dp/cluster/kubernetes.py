"""Kubernetes Indexed Jobs and JobSets (`JOB_COMPLETION_INDEX`): see docs/cluster.md."""

from __future__ import annotations

import string
from typing import List

from keras_dp.cluster.base import MAX_TASKS, ClusterEnvironment, read_int
from keras_dp.cluster.registry import register_environment
from keras_dp.errors import ClusterConfigError

INDEX = "JOB_COMPLETION_INDEX"
NUM_WORKERS = "KERAS_DP_NUM_WORKERS"
HOST_PATTERN = "KERAS_DP_HOST_PATTERN"
PODS_PER_JOB = "KERAS_DP_PODS_PER_JOB"
JOBSET_PATTERN = "{jobset}-{replicated_job}-{job_index}-{index}.{jobset}"
_FIELDS = {"index", "job_index", "jobset", "replicated_job"}


class KubernetesEnvironment(ClusterEnvironment):
    """Pods of a Kubernetes Indexed Job or JobSet."""

    name = "kubernetes"
    title = "Kubernetes Indexed Job"
    aliases = ("k8s",)
    address_variable = HOST_PATTERN
    variables = (INDEX, NUM_WORKERS, HOST_PATTERN, "JOBSET_NAME",
                 "REPLICATED_JOB_NAME", "JOB_INDEX", PODS_PER_JOB)

    def world_size(self) -> int:
        if NUM_WORKERS not in self.environ:
            raise ClusterConfigError(
                "is not set; Kubernetes does not tell a pod how many pods its Job has",
                variable=NUM_WORKERS, fix="add env KERAS_DP_NUM_WORKERS with the Job's "
                "completions (or list every address in KERAS_DP_WORKERS)")
        return read_int(self.environ, NUM_WORKERS, minimum=1, maximum=MAX_TASKS)

    def pods_per_job(self) -> int:
        if PODS_PER_JOB in self.environ:
            return read_int(self.environ, PODS_PER_JOB, minimum=1)
        return self.world_size()

    def rank(self) -> int:
        index = read_int(self.environ, INDEX, minimum=0)
        jobset = "JOBSET_NAME" in self.environ and "JOB_INDEX" in self.environ
        job_index = read_int(self.environ, "JOB_INDEX", minimum=0) if jobset else 0
        per_job = self.pods_per_job()
        if index >= per_job:
            raise ClusterConfigError(
                f"pod index {index} is out of range for {per_job} pods per Job",
                variable=INDEX, received=self.environ[INDEX], fix=f"set {NUM_WORKERS} (and for "
                f"JobSets {PODS_PER_JOB}) to match the Job's completions")
        rank, size = job_index * per_job + index, self.world_size()
        return self.checked_rank(rank, f"this pod is rank {rank} but {NUM_WORKERS}={size}",
                                 f"set {NUM_WORKERS} to the total number of pods")

    def pattern(self) -> str:
        jobset = "JOBSET_NAME" in self.environ
        pattern = self.environ.get(HOST_PATTERN, JOBSET_PATTERN if jobset else None)
        if pattern is None:
            raise ClusterConfigError(
                "is not set, so the other pods' host names are unknown", variable=HOST_PATTERN,
                fix="give the Job a headless Service as subdomain and set "
                    "KERAS_DP_HOST_PATTERN to '<job-name>-{index}.<service-name>'")
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None}
        except ValueError as exc:
            raise ClusterConfigError(
                f"is not a valid pattern ({exc})", variable=HOST_PATTERN,
                received=pattern, fix="write it like train-{index}.train-svc") from None
        if names - _FIELDS or "index" not in names:
            fields = ", ".join(f"{{{f}}}" for f in sorted(_FIELDS))
            raise ClusterConfigError(
                "must contain {index} and may use only " + fields, variable=HOST_PATTERN,
                received=pattern, fix="write it like train-{index}.train-svc")
        return pattern

    def addresses(self, port_base: int) -> List[str]:
        pattern, per_job = self.pattern(), self.pods_per_job()
        values = {"jobset": self.environ.get("JOBSET_NAME", ""),
                  "replicated_job": self.environ.get("REPLICATED_JOB_NAME", "")}
        return [pattern.format(index=r % per_job, job_index=r // per_job, **values)
                + f":{port_base}" for r in range(self.world_size())]


register_environment(KubernetesEnvironment, priority=100)
