"""The `TF_CONFIG` environment variable, as Kubeflow, Ray, Vertex AI and users set it.

Validated and explained, never rewritten; extra keys platforms add (Vertex AI's `job`,
`task.trial`) are kept. A `ps` job is refused (MultiWorkerMirroredStrategy never uses it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from typing import Any, Dict, List, Mapping, Optional

from keras_dp.cluster.base import ClusterEnvironment, local_placement
from keras_dp.cluster.registry import _register
from keras_dp.cluster.spec import ROLES, ClusterInfo, check_no_duplicates, parse_address
from keras_dp.errors import ClusterConfigError

VARIABLE = "TF_CONFIG"


class TFConfigEnvironment(ClusterEnvironment):
    """Reads and validates an existing `TF_CONFIG` (the highest precedence)."""

    name = "tf_config"
    title = "TF_CONFIG"
    variables = (VARIABLE,)
    aliases = ("tfconfig", "kubeflow")
    absent = ("asks for TF_CONFIG but TF_CONFIG is not set",
              "export TF_CONFIG, or unset KERAS_DP_CLUSTER")

    @property
    def raw(self) -> str:
        return self.environ.get(VARIABLE, "")

    @classmethod
    def detect(cls, environ: Mapping[str, str]) -> bool:
        return bool(str(environ.get(VARIABLE, "")).strip())

    def world_size(self) -> int:
        return self.info.num_workers

    def rank(self) -> int:
        """Position among the training tasks (for an evaluator: its task index)."""
        info = self.info
        return info.task_index if info.worker_index is None else info.worker_index

    def local_rank(self) -> int:
        return self.info.local_rank

    def local_size(self) -> int:
        return self.info.local_size

    def addresses(self, port_base: Optional[int] = None) -> List[str]:
        return self.info.worker_addresses

    def cluster_info(self, port_base: int, exchange=None, notes=()) -> ClusterInfo:
        return dataclasses.replace(self.info, notes=self.info.notes + tuple(notes))

    def _error(self, problem, field=None, fix=None) -> ClusterConfigError:
        return ClusterConfigError(problem, variable=VARIABLE, field=field, fix=fix,
                                  received=self.raw)

    def parse(self) -> Dict[str, Any]:
        """Parses the JSON, with the line and column of a syntax error."""
        try:
            config = json.loads(self.raw)
        except RecursionError:
            raise self._error("is nested too deeply to be a TF_CONFIG",
                              fix="set it to {\"cluster\": {...}, \"task\": {...}}") from None
        except json.JSONDecodeError as exc:
            raise self._error(
                f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                fix="quote the whole value in the shell, e.g. export TF_CONFIG='{\"cluster\": "
                    "{...}, \"task\": {...}}', or generate it with: export TF_CONFIG=$(keras-dp "
                    "tf-config)") from None
        if not isinstance(config, dict):
            raise self._error(f"must be a JSON object, got a JSON {type(config).__name__}",
                              fix="set it to an object with 'cluster' and 'task' keys")
        return config

    @functools.cached_property
    def info(self) -> ClusterInfo:
        """The validated cluster TF_CONFIG describes, with this task's place on its host."""
        config = self.parse()
        unknown = sorted(set(config) - {"cluster", "task", "rpc_layer", "environment", "job"})
        notes = [f"TF_CONFIG keys ignored by TensorFlow: {', '.join(unknown)}"] if unknown else []
        cluster, task = config.get("cluster"), config.get("task")
        if cluster in (None, {}) and task in (None, {}):  # TensorFlow's "no cluster"
            return ClusterInfo(source="single", cluster={}, variables={VARIABLE: self.raw},
                               notes=("TF_CONFIG is set but describes no cluster",))
        if cluster is None:
            raise self._error("has 'task' but no 'cluster'", "cluster",
                              "add \"cluster\": {\"worker\": [\"host:port\", ...]}")
        if not isinstance(cluster, dict):
            raise self._error(f"'cluster' must be an object, got {type(cluster).__name__}",
                              "cluster", "write cluster as {\"worker\": [\"host:port\", ...]}")
        jobs: Dict[str, tuple] = {}
        for role, addresses in cluster.items():
            field = f"cluster.{role}"
            if role not in ROLES:
                raise self._error(f"unknown role {role!r} in 'cluster'", field, f"use only the "
                                  f"roles {', '.join(ROLES)} (legacy 'master' is 'chief' in TF 2)")
            if not isinstance(addresses, list):
                raise self._error(f"job {role!r} must be a list of 'host:port' strings, "
                                  f"got {type(addresses).__name__}", field,
                                  f"write \"{role}\": [\"host:port\", ...]")
            if not addresses:
                raise self._error(f"job {role!r} has an empty address list", field,
                                  f"list at least one host:port for {role!r}, or remove the job")
            for i, address in enumerate(addresses):
                parse_address(address, variable=VARIABLE, field=f"{field}[{i}]", received=self.raw)
            jobs[role] = tuple(addresses)
        check_no_duplicates([a for job in jobs.values() for a in job], variable=VARIABLE,
                            field="cluster", received=self.raw)
        for role in ("chief", "evaluator"):
            if len(jobs.get(role, ())) > 1:
                raise self._error(
                    f"job {role!r} has {len(jobs[role])} tasks; TensorFlow allows one",
                    f"cluster.{role}", f"keep a single {role} and list the others under 'worker'")
        if not jobs.get("chief") and not jobs.get("worker"):
            raise self._error(
                "'cluster' has no 'chief' or 'worker' tasks (the worker list is empty)",
                "cluster", "list the training processes under \"worker\": [\"host:port\", ...]")

        if task is None:
            raise self._error(
                "is missing 'task', so this process does not know which task it is", "task",
                "add \"task\": {\"type\": \"worker\", \"index\": N} with this process's index")
        if not isinstance(task, dict):
            raise self._error(f"'task' must be an object, got {type(task).__name__}", "task",
                              "write \"task\": {\"type\": \"worker\", \"index\": N}")
        task_type = task.get("type")
        if task_type is None:
            raise self._error("'task' has no 'type'", "task.type",
                              "add \"type\": \"worker\" (or chief, evaluator)")
        if task_type not in ROLES:
            raise self._error(f"unknown task type {task_type!r}", "task.type",
                              f"use one of {', '.join(ROLES)}")
        if task_type not in jobs:
            raise self._error(
                f"task type {task_type!r} has no job in 'cluster' (jobs: {', '.join(jobs)})",
                "task.type", f"add a {task_type!r} job to 'cluster' or fix the task type")
        index = task.get("index")
        if index is None:
            raise self._error("'task' has no 'index'", "task.index",
                              "add \"index\": N, this process's position in its job")
        if isinstance(index, bool) or not isinstance(index, (int, str)) or (
                isinstance(index, str) and not re.fullmatch(r"[0-9]+", index.strip())):
            raise self._error(f"'task.index' must be a whole number, got {index!r}",
                              "task.index", "write \"index\": N, this process's position in "
                              "its job as a whole number (0 for the first)")
        index, count = int(index), len(jobs[task_type])
        if not 0 <= index < count:
            raise self._error(
                f"task.index is {index} but job {task_type!r} has {count} "
                f"task{'s' if count != 1 else ''} (valid: 0-{count - 1})", "task.index",
                f"set task.index between 0 and {count - 1}, or list more {task_type!r} addresses")
        rpc_layer, environment = config.get("rpc_layer"), config.get("environment")
        if rpc_layer is not None and not isinstance(rpc_layer, str):
            raise self._error("'rpc_layer' must be a string such as \"grpc\"", "rpc_layer",
                              "set \"rpc_layer\": \"grpc\"")
        if environment is not None and not isinstance(environment, str):
            raise self._error("'environment' must be a string", "environment",
                              "remove it or set it to a string such as \"cloud\"")
        if "ps" in jobs:
            raise self._error(
                f"'cluster' has {len(jobs['ps'])} 'ps' task(s): parameter-server training is "
                "not supported; keras_dp trains synchronously with "
                "MultiWorkerMirroredStrategy, where the ps tasks would never be used",
                "cluster.ps", "remove the 'ps' job (list those machines under 'worker' to "
                "train on them too), or use tf.distribute.ParameterServerStrategy without "
                "keras_dp for asynchronous training")
        info = ClusterInfo(
            source=self.name, cluster={role: jobs[role] for role in ROLES if role in jobs},
            task_type=task_type, task_index=index, rpc_layer=rpc_layer,
            environment=environment, notes=tuple(notes), variables={VARIABLE: self.raw},
            _tf_config=config)
        if info.is_multi_worker and info.is_training_task:
            local_rank, local_size = local_placement(info.worker_addresses, info.worker_index)
            info = dataclasses.replace(info, local_rank=local_rank, local_size=local_size)
        return info


_register(TFConfigEnvironment, priority=500)
