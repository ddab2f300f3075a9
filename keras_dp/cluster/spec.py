"""`ClusterInfo`: the validated description of a training cluster."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from keras_dp.errors import ClusterConfigError

#: Roles TensorFlow knows in a cluster, in the order TF_CONFIG lists them.
ROLES = ("chief", "worker", "ps", "evaluator")
#: Roles that take part in synchronous data-parallel training.
TRAINING_ROLES = ("chief", "worker")

_HOST_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def parse_address(address: Any, *, variable: str, field: Optional[str] = None,
                  received: Any = None) -> Tuple[str, int]:
    """Splits and checks one `host:port` address (IPv6 hosts in brackets: `[::1]:2222`).

    Raises:
        ClusterConfigError: naming `variable` (and `field`) and showing `received`
            (default `address`), if it is not `host:port` with a port in 1-65535.
    """
    def error(problem: str, fix: str) -> ClusterConfigError:
        return ClusterConfigError(problem, variable=variable, field=field, fix=fix,
                                  received=address if received is None else received)

    if not isinstance(address, str) or not address.strip():
        raise error(f"a worker address must be a non-empty 'host:port' string, got {address!r}",
                    "write every address as host:port, e.g. 10.0.0.1:2222")
    text = address.strip()
    if text != address:
        raise error(f"address {address!r} has spaces around it", f"write it without spaces: {text}")
    if "://" in text:
        raise error(f"address {text!r} has a URL scheme",
                    "drop the scheme and write host:port only (the protocol goes in 'rpc_layer')")
    if text.startswith("["):
        match = re.match(r"^\[([0-9A-Fa-f:.]+)\]:(.*)$", text)
        if not match:
            raise error(f"address {text!r} is not '[ipv6]:port'",
                        "write IPv6 addresses as [host]:port, e.g. [::1]:2222")
        host, port_text = "[" + match.group(1) + "]", match.group(2)
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise error(f"address {text!r} has no port", f"add the port, e.g. {text}:2222")
        if not host:
            raise error(f"address {text!r} has no host",
                        f"put the host before the port, e.g. 10.0.0.1{text} or localhost{text}")
        if not _HOST_RE.match(host):
            raise error(f"address {text!r} has an invalid host name {host!r}",
                        "use a host name or IP address (letters, digits, '.', '-', '_')")
    if not re.fullmatch(r"[0-9]+", port_text):
        raise error(f"the port of {text!r} is not a number ({port_text!r})",
                    "give a numeric port between 1 and 65535, e.g. host:2222")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise error(f"the port of {text!r} is {port}, outside 1-65535",
                    "pick a port between 1 and 65535 (above 1023 needs no root)")
    return host, port


def check_no_duplicates(addresses: Sequence[str], *, variable: str,
                        field: Optional[str] = None, received: Any = None) -> None:
    """Raises if an address appears twice (two tasks cannot share a port)."""
    seen: Dict[str, int] = {}
    for position, address in enumerate(addresses):
        key = address.strip().lower()
        if key in seen:
            raise ClusterConfigError(
                f"address {address!r} appears twice (entries {seen[key]} and {position}); "
                "two tasks cannot listen on the same host and port",
                variable=variable, field=field, received=received,
                fix="give every task its own host:port (same host, different ports is fine)")
        seen[key] = position


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """Where this process sits in a (possibly single-process) training cluster, validated.

    Attributes:
        source: The environment's name (`"tf_config"`, `"slurm"`, ...) or `"single"`.
        cluster: Job name to `host:port` addresses, in TF_CONFIG order; `{}` if single.
        task_type, task_index: This process's role (`"worker"`, `"chief"`, ...) and index.
        rpc_layer, environment: TF_CONFIG's `rpc_layer` and `environment`, if given.
        local_rank, local_size: Its index among, and the number of, its node's processes.
        notes: Remarks gathered while resolving.
        variables: The environment variables that were read, with values.
    """

    source: str
    cluster: Mapping[str, Tuple[str, ...]]
    task_type: str = "worker"
    task_index: int = 0
    rpc_layer: Optional[str] = None
    environment: Optional[str] = None
    local_rank: int = 0
    local_size: int = 1
    notes: Tuple[str, ...] = ()
    variables: Mapping[str, str] = dataclasses.field(default_factory=dict)
    _tf_config: Optional[Mapping[str, Any]] = dataclasses.field(
        default=None, repr=False, compare=False)

    @property
    def worker_addresses(self) -> List[str]:
        """Addresses of the training tasks (chief first, then workers)."""
        return [address for role in TRAINING_ROLES for address in self.cluster.get(role, ())]

    @property
    def num_workers(self) -> int:
        """Number of processes that train (chief plus workers); at least 1."""
        return max(1, len(self.worker_addresses))

    @property
    def is_multi_worker(self) -> bool:
        """Whether training spans more than one process."""
        return len(self.worker_addresses) > 1

    @property
    def is_training_task(self) -> bool:
        """Whether this process trains (False for `ps` and `evaluator`)."""
        return self.task_type in TRAINING_ROLES

    @property
    def worker_index(self) -> Optional[int]:
        """Position of this process in `worker_addresses`, None if it does not train."""
        if not self.cluster or self.task_type == "chief":
            return 0
        if self.task_type == "worker":
            return len(self.cluster.get("chief", ())) + self.task_index
        return None

    @property
    def is_chief(self) -> bool:
        """Whether this process writes checkpoints, logs and models (chief, else worker 0)."""
        return self.worker_index == 0

    def to_tf_config(self) -> Dict[str, Any]:
        """The TF_CONFIG dict for this process (one it came from unchanged; `{}`s if single)."""
        if self._tf_config is not None:
            return copy.deepcopy(dict(self._tf_config))
        if not self.cluster:
            return {"cluster": {}, "task": {}}
        extra = {"rpc_layer": self.rpc_layer, "environment": self.environment}
        return {"cluster": {role: list(addrs) for role, addrs in self.cluster.items()},
                "task": {"type": self.task_type, "index": self.task_index},
                **{key: value for key, value in extra.items() if value}}

    def to_json(self) -> str:
        """TF_CONFIG as one line of JSON, as `keras-dp tf-config` prints it."""
        return json.dumps(self.to_tf_config(), separators=(",", ":"))

    def describe(self) -> str:
        """A short one-line summary, e.g. for logs."""
        if not self.is_multi_worker:
            return f"single worker (source: {self.source})"
        return (f"{self.task_type} {self.task_index} of {self.num_workers} workers "
                f"(source: {self.source}, chief: {'yes' if self.is_chief else 'no'})")
