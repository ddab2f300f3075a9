"""The registered cluster environments (each module of this package registers its own)."""

from __future__ import annotations

import importlib
import os
import pkgutil
from typing import Dict, Tuple, Type

from keras_dp.cluster.base import PORT_BASE_VARIABLE, SOURCE_VARIABLE, ClusterEnvironment

#: TF_CONFIG (500) and KERAS_DP_WORKERS (400) come before every launcher.
LAUNCHER_PRIORITY_LIMIT = 400
#: Names `KERAS_DP_CLUSTER` keeps for itself.
RESERVED_NAMES = ("auto", "single", "none", "local")

_registry: Dict[str, Tuple[int, int, Type[ClusterEnvironment]]] = {}
_loaded = False


def _register(cls: Type[ClusterEnvironment], priority: int) -> None:
    previous = _registry.get(cls.name)
    if previous is not None and previous[2].__qualname__ != cls.__qualname__:
        raise ValueError(f"a cluster environment named {cls.name!r} is already registered "
                         f"({previous[2].__qualname__}); give {cls.__qualname__} another name")
    order = previous[1] if previous else len(_registry)
    _registry[cls.name] = (priority, order, cls)


def register_environment(cls: Type[ClusterEnvironment], *, priority: int = 0
                         ) -> Type[ClusterEnvironment]:
    """Adds a cluster environment that `resolve_cluster()` detects.

    Its `name` becomes a value of `KERAS_DP_CLUSTER`, its `variables` join
    `cluster_variables()`; registering a class of the same name again replaces it.
    Example: docs/cluster.md#your-own-environment.

    Args:
        cls: A `ClusterEnvironment` subclass with `name`, `title` and `variables`.
        priority: Its place among the launchers, below 400 (after TF_CONFIG and
            KERAS_DP_WORKERS); higher is tried earlier (MPI 300, SLURM 200, Kubernetes 100).

    Returns:
        `cls`.

    Raises:
        TypeError: if `cls` is not a `ClusterEnvironment` subclass.
        ValueError: if its name is empty, reserved or taken, or the priority is not a
            whole number below 400.
    """
    if not (isinstance(cls, type) and issubclass(cls, ClusterEnvironment)):
        raise TypeError(f"{cls!r} is not a keras_dp.cluster.ClusterEnvironment subclass")
    name = str(cls.name or "")
    if not name or name != name.strip().lower().replace("-", "_") or name in RESERVED_NAMES:
        raise ValueError(
            f"{cls.__qualname__}.name is {cls.name!r}; set it to a lower-case name "
            f"other than {', '.join(RESERVED_NAMES)} (it is a value of {SOURCE_VARIABLE})")
    if type(priority) is not int or priority >= LAUNCHER_PRIORITY_LIMIT:  # not a bool
        raise ValueError(f"priority must be a whole number below {LAUNCHER_PRIORITY_LIMIT} "
                         f"(TF_CONFIG and KERAS_DP_WORKERS come first), got {priority!r}")
    _load_builtins()
    _register(cls, priority)
    return cls


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in pkgutil.iter_modules([os.path.dirname(__file__)]):
            importlib.import_module(f"{__package__}.{module.name}")


def environments() -> Tuple[Type[ClusterEnvironment], ...]:
    """The registered environments, highest precedence first."""
    _load_builtins()
    ranked = sorted(_registry.values(), key=lambda entry: (-entry[0], entry[1]))
    return tuple(cls for _, _, cls in ranked)


def cluster_variables() -> Tuple[str, ...]:
    """Every variable that says which cluster a process joins (a launcher removes them)."""
    names = [name for cls in environments() for name in cls.variables]
    return tuple(dict.fromkeys(names + [SOURCE_VARIABLE, PORT_BASE_VARIABLE]))
