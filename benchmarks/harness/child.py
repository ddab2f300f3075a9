"""Entry point of a benchmark's child process.

`python benchmarks/harness/child.py MODULE CONFIG_JSON RESULT_PATTERN` runs
`MODULE.child(config)` (e.g. `scaling`: `benchmarks/scaling.py`) and writes its
dict as JSON to `RESULT_PATTERN.format(index=worker_index)`.

Before anything imports TensorFlow it applies the process settings a
measurement asks for in `config`: `affinity` (a list of core lists, one per
worker: worker i runs on `affinity[i % len]`), `threads` (TensorFlow's
intra-op threads, also OMP_NUM_THREADS for oneDNN) and `inter_threads`.
`config["timeout"]` seconds after start the process is stopped (SIGALRM),
so no benchmark can hang forever.
"""

import time

STARTED = time.time()  # noqa: E402 - the first thing: start-up is measured from here

import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

# `benchmarks/` (the benchmark scripts and the harness package) on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def worker_index(environ=None) -> int:
    """This worker's index from TF_CONFIG (the launcher sets it), else 0."""
    environ = os.environ if environ is None else environ
    try:
        return int(json.loads(environ.get("TF_CONFIG") or "{}").get("task", {}).get("index", 0))
    except (ValueError, AttributeError):
        return 0


def apply_process_settings(config: dict, index: int) -> dict:
    """Pins this process to its cores and sets thread counts; returns what was applied."""
    applied = {}
    affinity = config.get("affinity")
    if affinity:
        cores = set(affinity[index % len(affinity)])
        available = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        if cores and cores <= available:
            os.sched_setaffinity(0, cores)
            applied["cores"] = sorted(cores)
        else:
            applied["cores"] = None
            applied["affinity_skipped"] = (f"asked for cores {sorted(cores)}, only "
                                           f"{sorted(available)} available")
    if config.get("threads"):
        os.environ["OMP_NUM_THREADS"] = str(config["threads"])
        applied["threads"] = int(config["threads"])
    if config.get("inter_threads"):
        applied["inter_threads"] = int(config["inter_threads"])
    return applied


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    module_name, config_json, pattern = argv
    config = json.loads(config_json)
    if config.get("timeout"):
        signal.alarm(int(config["timeout"]))
    index = worker_index()
    config["_index"] = index
    config["_started"] = STARTED
    config["_launched"] = float(os.environ.get("KERAS_DP_BENCH_T0", STARTED))
    config["_applied"] = apply_process_settings(config, index)
    import importlib

    module = importlib.import_module(module_name)
    result = module.child(config)
    result.setdefault("worker", index)
    result.setdefault("process", config["_applied"])
    path = pattern.format(index=index)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(result, handle, default=float)
    os.replace(path + ".tmp", path)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
