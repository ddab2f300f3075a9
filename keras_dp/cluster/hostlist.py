"""SLURM's compact host-list (`gpu[01-03,7]`) and tasks-per-node (`2(x3),1`) syntax."""

from __future__ import annotations

import itertools
import math
import re
from typing import List

from keras_dp.cluster.base import MAX_TASKS
from keras_dp.errors import ClusterConfigError

_SYNTAX = "use SLURM host-list syntax, e.g. node[01-04]"


def _error(problem: str, text: str, variable: str, fix: str = _SYNTAX) -> ClusterConfigError:
    return ClusterConfigError(problem, variable=variable, received=text, fix=fix)


def _expand_range_group(group: str, *, text: str, variable: str) -> List[str]:
    """Expands the inside of one bracket group: `01-03,7` -> 01 02 03 7."""
    values: List[str] = []
    for item in group.split(","):
        item = item.strip()
        match = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", item)
        if not match:
            raise _error(f"bad range {item!r} inside [{group}] in host list {text!r}", text,
                         variable, "ranges are numbers or low-high, e.g. node[1-4,7]")
        low_text, high_text = match.group(1), match.group(2) or match.group(1)
        low, high = int(low_text), int(high_text)
        if high < low:
            raise _error(f"range {item!r} runs backwards in host list {text!r}", text,
                         variable, "write ranges as low-high")
        if high - low >= MAX_TASKS:
            raise _error(f"range {item!r} in host list {text!r} names {high - low + 1:,} hosts, "
                         f"more than the {MAX_TASKS:,} keras_dp accepts", text, variable,
                         "check the range's bounds")
        width = len(low_text) if low_text[0] == "0" or len(low_text) == len(high_text) else 0
        values.extend(str(n).zfill(width) for n in range(low, high + 1))
    return values


def expand_hostlist(text: str, *, variable: str = "SLURM_STEP_NODELIST") -> List[str]:
    """Expands a SLURM host list in SLURM's order, the last bracket group fastest.

    `"gpu[01-02,7],r[1-2]-n[1-2]"` gives gpu01 gpu02 gpu7 r1-n1 r1-n2 r2-n1 r2-n2, as
    `scontrol show hostnames`; no deduplication. `variable` is named in errors.

    Raises:
        ClusterConfigError: if the syntax is invalid.
    """
    if not text or not text.strip():
        raise _error("the host list is empty", text, variable,
                     "run inside a SLURM job step (srun) or set the node list")
    stripped, depth, hosts = text.strip(), 0, []
    for char in stripped:
        if char == "[":
            if depth:
                raise _error(f"nested '[' in host list {stripped!r}", stripped, variable)
            depth = 1
        elif char == "]":
            if not depth:
                raise _error(f"unmatched ']' in host list {stripped!r}", stripped, variable)
            depth = 0
    if depth:
        raise _error(f"unclosed '[' in host list {stripped!r}", stripped, variable)
    for part in re.split(r",(?![^\[\]]*\])", stripped):  # the commas outside brackets
        part = part.strip()
        if not part:
            raise _error(f"empty entry in host list {text!r}", text, variable,
                         "remove the doubled or trailing comma")
        choices: List[List[str]] = []
        for piece in re.split(r"(\[[^\]]*\])", part):
            if piece.startswith("["):
                if piece == "[]":
                    raise _error(f"empty brackets in host list {text!r}", text, variable,
                                 "put a range inside the brackets, e.g. n[1-2]")
                choices.append(_expand_range_group(piece[1:-1], text=text, variable=variable))
            elif piece:
                choices.append([piece])
        if len(hosts) + math.prod(len(options) for options in choices) > MAX_TASKS:
            raise _error(f"host list {text!r} names more than the {MAX_TASKS:,} hosts keras_dp "
                         "accepts", text, variable, "check its ranges")
        hosts.extend("".join(combo) for combo in itertools.product(*choices))
    return hosts


def expand_tasks_per_node(text: str, *, variable: str = "SLURM_STEP_TASKS_PER_NODE") -> List[int]:
    """Expands SLURM's tasks-per-node list, e.g. `"2(x3),1"` -> `[2, 2, 2, 1]`.

    Raises:
        ClusterConfigError: if the syntax is invalid.
    """
    counts: List[int] = []
    for item in (text or "").split(","):
        match = re.fullmatch(r"\s*([0-9]+)(?:\(x([0-9]+)\))?\s*", item)
        if not match:
            raise _error(f"bad entry {item!r} in tasks-per-node list {text!r}", text, variable,
                         "SLURM writes this as counts with optional repeats, e.g. 2(x3),1")
        count, repeat = int(match.group(1)), int(match.group(2) or 1)
        if repeat + len(counts) > MAX_TASKS:
            raise _error(f"entry {item!r} in tasks-per-node list {text!r} repeats {repeat:,} "
                         f"times, more than the {MAX_TASKS:,} nodes keras_dp accepts", text,
                         variable, "check the repeat count")
        counts.extend([count] * repeat)
    return counts
