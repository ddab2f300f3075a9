"""What every benchmark shares: options, statistics, output, results, child processes.

The parent process of a benchmark never imports TensorFlow. Each
measurement runs in fresh child processes (`benchmarks/harness/child.py`),
started through keras_dp's own launcher (`keras_dp.launcher.Launcher`), so a
2-worker measurement is exactly what `keras-dp launch -n 2` runs: one
TF_CONFIG per worker on 127.0.0.1, free ports. A child writes its raw
measurements as JSON; the parent prints them, the ratios and the machine.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from keras_dp.errors import KerasDPError

RESULTS_FILE = "results.json"
#: Model overrides of the smoke configurations (the `tiny` preset, smaller).
SMOKE_MODEL = {"d_model": 32, "num_layers": 1, "num_heads": 2}
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")


def cluster_variables() -> Tuple[str, ...]:
    """The variables that would make a child join some other cluster.

    `keras_dp.cluster.cluster_variables()`, the library's one list (every
    variable a registered environment reads); `child_environment` also drops
    `KERAS_DP_CPU_REPLICAS`, a strategy setting rather than a cluster variable.
    """
    from keras_dp.cluster import cluster_variables as library_list
    return library_list()


class BenchmarkError(KerasDPError, RuntimeError):
    """A benchmark could not measure (a child failed, timed out, or found no data)."""

    exit_code = 1


@dataclasses.dataclass
class BenchOptions:
    """Options every benchmark takes (the flags of the benchmark scripts).

    Attributes:
        out: Folder for `results.json`, `summary.md`, the PNG plots and logs.
        smoke: Smallest configuration (seconds): checks that the benchmark
            runs, measures nothing worth quoting.
        rounds: Alternating rounds of the compared runs (default per benchmark).
        steps: Timed steps per burst (default per benchmark).
        plot: Write the PNG plots.
        timeout: Seconds after which a child process is stopped.
        quiet_load: 1-minute load average under which the machine counts as quiet.
        wait_quiet: Seconds to wait for a quiet machine before each benchmark (0: don't).
        gpu: The gpu benchmark's options (`presets`, `batch_size`,
            `peak_tflops`, `precision`).
    """

    out: str = "keras_dp_bench"
    smoke: bool = False
    rounds: Optional[int] = None
    steps: Optional[int] = None
    plot: bool = True
    timeout: float = 1200.0
    quiet_load: float = 0.3
    wait_quiet: float = 0.0
    gpu: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def model(self) -> Dict[str, Any]:
        """Model overrides: `SMOKE_MODEL` for smoke runs, else none (the preset)."""
        return dict(SMOKE_MODEL) if self.smoke else {}

    def pick(self, name: str, full, smoke):
        """`self.<name>` if given, else the full or smoke default."""
        value = getattr(self, name, None)
        if value is not None:
            return value
        return smoke if self.smoke else full


# -- statistics ----------------------------------------------------------------
def summarize(values: Iterable[float]) -> Dict[str, float]:
    """n, median, mean, min, max and relative spread (stdev / mean) of `values`."""
    values = [float(v) for v in values]
    if not values:
        return {"n": 0}
    mean = statistics.fmean(values)
    stdev = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"n": len(values), "median": statistics.median(values), "mean": mean,
            "min": min(values), "max": max(values),
            "rel_stdev": stdev / mean if mean else 0.0}


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else math.nan


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


# -- output --------------------------------------------------------------------
def say(text: str = "") -> None:
    """Prints a line of benchmark output at once (children may print meanwhile)."""
    print(text, flush=True)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with aligned columns."""
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}"
    return "n/a" if value is None else str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- results -------------------------------------------------------------------
def load_results(out: str) -> Dict[str, Any]:
    path = os.path.join(out, RESULTS_FILE)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    return {"benchmarks": {}}


def save_result(out: str, name: str, data: Mapping[str, Any]) -> str:
    """Merges one benchmark's result into `out/results.json` (written atomically)."""
    os.makedirs(out, exist_ok=True)
    results = load_results(out)
    results.setdefault("benchmarks", {})[name] = dict(data)
    path = os.path.join(out, RESULTS_FILE)
    handle, temporary = tempfile.mkstemp(dir=out, prefix=".results-", suffix=".json")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(results, stream, indent=1, default=_json_default)
    os.replace(temporary, path)
    return path


def _json_default(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


# -- child processes -------------------------------------------------------------
def child_environment(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Our environment without cluster variables, TensorFlow's INFO lines silenced."""
    drop = tuple(cluster_variables()) + ("KERAS_DP_CPU_REPLICAS",)
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env.update(extra or {})
    return env


def run_children(module: str, config: Mapping[str, Any], num_workers: int, *,
                 options: BenchOptions, label: str,
                 env: Optional[Mapping[str, str]] = None) -> List[Dict[str, Any]]:
    """Runs `<module>.child(config)` in `num_workers` worker processes.

    `module` is a benchmark script's module name (`"scaling"`: the file
    `benchmarks/scaling.py`).

    The workers are started by `keras_dp.launcher.Launcher` (one TF_CONFIG
    each on 127.0.0.1 when `num_workers > 1`); their output goes to
    `<out>/logs/<label>.log`. `KERAS_DP_BENCH_T0` tells them when the launch began.

    Returns:
        Each worker's result dict, in worker order.

    Raises:
        BenchmarkError: naming the log, when a worker fails.
    """
    from keras_dp.launcher import Launcher

    logs = os.path.join(options.out, "logs")
    os.makedirs(logs, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f"keras_dp_bench_{label}_")
    pattern = os.path.join(work, "worker-{index}.json")
    config = dict(config, timeout=int(options.timeout))
    command = [sys.executable, CHILD, module, json.dumps(config), pattern]
    log_path = os.path.join(logs, f"{label}.log")
    child_env = child_environment(env)
    with open(log_path, "w", encoding="utf-8") as log:
        child_env["KERAS_DP_BENCH_T0"] = repr(time.time())
        result = Launcher(command, num_workers, env=child_env, stdout=log, stderr=log,
                          stop_grace=15.0).run()
    if result.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            tail = "".join(log.readlines()[-25:])
        raise BenchmarkError(f"the {label} run failed (exit code {result.returncode}); "
                             f"full output in {log_path}; its end:\n{tail}")
    results = []
    for index in range(num_workers):
        path = pattern.format(index=index)
        if not os.path.exists(path):
            raise BenchmarkError(f"worker {index} of the {label} run wrote no result; see "
                                 f"{log_path}")
        with open(path, encoding="utf-8") as handle:
            results.append(json.load(handle))
        os.remove(path)
    os.rmdir(work)
    return results
