"""Scaling on this machine: workers and replicas at the same per-replica batch.

    python benchmarks/scaling.py [--smoke] [--rounds N] [--steps N] [--out DIR]

Configurations (each a fresh process or processes, started by
`keras_dp.launcher.Launcher`, run round-robin for `rounds` rounds, the order
reversed every other round so load drift hits all alike):

| name | processes | replicas | cores | TF threads (intra/inter) |
| --- | --- | --- | --- | --- |
| `1 worker` | 1 | 1 | core 0 | 1/1 |
| `2 workers (MWMS)` | 2 (MultiWorkerMirroredStrategy) | 2 | one core each | 1/1 |
| `MirroredStrategy, 2 vCPUs` | 1 (`cpu_replicas=2`) | 2 | both | 1/2 |
| `1 worker, 2 threads` (reference) | 1 | 1 | both | 2/2 |

Every process is pinned to its cores (`sched_setaffinity`), so "1 thread"
means one core's worth of work: the single-worker baseline cannot quietly
borrow the second core. Each replica trains the default job's model on 32
sequences of 128 tokens per step through `keras_dp.scope()` and
`keras_dp.data.text_dataset`; tokens/s counts all replicas' tokens.
Scaling efficiency = tokens/s / (replicas x tokens/s of `1 worker`).

XLA is off in every configuration: XLA cannot compile the step of a
MirroredStrategy over logical CPU devices (it compiles for the first CPU
device and fails on the replica-1 variables: TensorFlow's "tf.Variable on a
different device" limitation), and all configurations must run the same step.

Share of the step spent in the gradient all-reduce, measured two ways in the
multi-replica configurations:

- in the step: bursts of the same model with the gradient all-reduce
  removed (`optimizer._all_reduce_sum_gradients` returns the local
  gradients - wrong training, identical compute), alternating with normal
  bursts; share = (step with - step without) / step with;
- alone: the all-reduce Keras issues (`replica_context.all_reduce(SUM,
  gradients)` over tensors of the model's trainable variables' shapes),
  timed by itself; share = its time / the step time.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List

from harness.common import (BenchOptions, median, ratio, run_children, say, summarize,
                                   table)

NAME = "scaling"
BASELINE = "1 worker"


def configurations(smoke: bool, cores: int) -> List[Dict[str, Any]]:
    """The configurations measured (see the module docstring)."""
    pair = [[0], [1]] if cores >= 2 else None
    both = [[0, 1]] if cores >= 2 else None
    configs = [
        {"name": BASELINE, "workers": 1, "replicas": 1, "affinity": [[0]], "threads": 1,
         "inter_threads": 1},
        {"name": "2 workers (MWMS)", "workers": 2, "replicas": 2, "affinity": pair,
         "threads": 1, "inter_threads": 1},
        {"name": "MirroredStrategy, 2 vCPUs", "workers": 1, "replicas": 2, "cpu_replicas": 2,
         "affinity": both, "threads": 1, "inter_threads": 2},
        {"name": "1 worker, 2 threads", "workers": 1, "replicas": 1, "affinity": both,
         "threads": 2, "inter_threads": 2, "reference": True},
    ]
    # The smoke run keeps the baseline and the multi-worker path (the
    # MirroredStrategy path is the overhead benchmark's smoke run).
    return configs[:2] if smoke else configs


def settings(options: BenchOptions) -> Dict[str, Any]:
    smoke = options.smoke
    return {"rounds": options.pick("rounds", 2, 1), "steps": options.pick("steps", 25, 4),
            "bursts": 1 if smoke else 2, "warmup_steps": 2 if smoke else 3,
            "allreduce_reps": 3 if smoke else 30, "preset": "tiny",
            "seq_len": 32 if smoke else 128, "batch": 4 if smoke else 32,
            "xla": False,  # see the module docstring
            "model": options.model()}


def run(options: BenchOptions) -> Dict[str, Any]:
    config = settings(options)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    configs = configurations(options.smoke, cores)
    if cores < 2:
        say("scaling: fewer than 2 usable cores: processes are not pinned and the figures "
            "show no scaling")
    say(f"scaling: tiny LM, {config['batch']} sequences x {config['seq_len']} tokens per "
        f"replica per step, XLA {'on' if config['xla'] else 'off'}; {config['rounds']} "
        f"round(s) over {len(configs)} configurations, {config['bursts']} burst(s) of "
        f"{config['steps']} timed steps each")
    raw: Dict[str, List[Dict[str, Any]]] = {c["name"]: [] for c in configs}
    for round_index in range(config["rounds"]):
        ordered = configs if round_index % 2 == 0 else configs[::-1]
        for spec in ordered:
            child_config = dict(config, **{k: v for k, v in spec.items() if k != "name"})
            child_config["no_comm"] = spec["replicas"] > 1
            label = f"scaling-{spec['name'].split()[0]}{spec['workers']}w{spec['replicas']}r" \
                    f"-t{spec['threads']}-round{round_index + 1}"
            workers = run_children(__name__, child_config, spec["workers"], options=options,
                                   label=label)
            raw[spec["name"]].append({"round": round_index + 1, "workers": workers})
            chief = workers[0]
            say(f"round {round_index + 1} {spec['name']}: "
                f"{1000 * median(chief['steps']):.1f} ms/step "
                f"(load {chief['load'][0]:.2f}->{chief['load'][1]:.2f})")
    rows, entries = [], []
    tokens_per_replica = config["batch"] * config["seq_len"]
    base_rate = None
    for spec in configs:
        runs = raw[spec["name"]]
        steps = [t for run_ in runs for t in run_["workers"][0]["steps"]]
        no_comm = [t for run_ in runs for t in run_["workers"][0].get("no_comm_steps", [])]
        allreduce = [t for run_ in runs for t in run_["workers"][0].get("allreduce", [])]
        step = median(steps)
        rate = spec["replicas"] * tokens_per_replica / step
        if spec["name"] == BASELINE:
            base_rate = rate
        entry = {"name": spec["name"], "workers": spec["workers"], "replicas": spec["replicas"],
                 "threads": spec["threads"], "reference": spec.get("reference", False),
                 "step": summarize(steps), "tokens_per_sec": rate,
                 "per_round_ms": [1000 * median(r["workers"][0]["steps"]) for r in runs],
                 "strategy": runs[0]["workers"][0]["strategy"],
                 "cores": [w.get("process", {}).get("cores") for w in runs[0]["workers"]]}
        if no_comm:
            entry["no_comm_step"] = summarize(no_comm)
            entry["allreduce_share_in_step"] = ratio(step - median(no_comm), step)
        if allreduce:
            entry["allreduce"] = summarize(allreduce)
            entry["allreduce_share_alone"] = ratio(median(allreduce), step)
            entry["gradient_bytes"] = runs[0]["workers"][0]["gradient_bytes"]
        entries.append(entry)
    for entry in entries:
        entry["efficiency"] = ratio(entry["tokens_per_sec"],
                                    entry["replicas"] * (base_rate or float("nan")))
        rows.append([entry["name"], entry["replicas"], 1000 * entry["step"]["median"],
                     " ".join(f"{v:.1f}" for v in entry["per_round_ms"]),
                     entry["tokens_per_sec"], entry["efficiency"],
                     _pct(entry.get("allreduce_share_in_step")),
                     _pct(entry.get("allreduce_share_alone"))])
    say("")
    say(table(["configuration", "replicas", "ms/step", "per round", "tokens/s", "efficiency",
               "all-reduce (in step)", "all-reduce (alone)"], rows))
    for entry in entries:
        if "allreduce" in entry:
            say(f"{entry['name']}: step {1000 * entry['step']['median']:.1f} ms with the "
                f"gradient all-reduce, {1000 * entry['no_comm_step']['median']:.1f} ms "
                f"without; the all-reduce of {entry['gradient_bytes'] / 1e6:.2f} MB of "
                f"gradients alone {1000 * entry['allreduce']['median']:.2f} ms "
                f"(n={entry['allreduce']['n']})")
    say("efficiency = tokens/s / (replicas x tokens/s of '1 worker'); the reference row uses "
        "both cores for one replica")
    return {"settings": config, "configurations": entries, "raw": raw}


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def child(config: Dict[str, Any]) -> Dict[str, Any]:
    import tensorflow as tf

    from harness import workload

    load_before = os.getloadavg()[0]
    workload.configure_threads(config)
    workload.set_seed(0)
    import keras_dp

    context = keras_dp.scope(cpu_replicas=config.get("cpu_replicas"))
    with context:
        model = workload.build_lm(config["preset"], seq_len=config["seq_len"], xla=config["xla"],
                            **config["model"])
    data = keras_dp.data.text_dataset("builtin", seq_len=config["seq_len"],
                                      global_batch_size=context.global_batch(config["batch"]))
    workload.timed_fit(model, data, config["warmup_steps"])
    result: Dict[str, Any] = {"strategy": context.describe(), "steps": [],
                              "no_comm_steps": []}
    functions = {"with": model.train_function}
    if config.get("no_comm"):
        # The same step without the gradient all-reduce: each replica applies
        # its own gradients (wrong training, identical compute).
        model.optimizer._all_reduce_sum_gradients = lambda grads_and_vars: list(grads_and_vars)
        model.train_function = None
        workload.timed_fit(model, data, config["warmup_steps"])
        functions["without"] = model.train_function
    for _ in range(int(config["bursts"])):
        model.train_function = functions["with"]
        result["steps"].extend(workload.timed_fit(model, data, config["steps"]))
        if "without" in functions:
            model.train_function = functions["without"]
            result["no_comm_steps"].extend(workload.timed_fit(model, data, config["steps"]))
    if context.num_replicas > 1:
        result["allreduce"], result["gradient_bytes"] = _time_allreduce(
            tf, context.strategy, model, int(config["allreduce_reps"]))
    result["load"] = [load_before, os.getloadavg()[0]]
    return result


def _time_allreduce(tf, strategy, model, reps: int):
    """Times `replica_context.all_reduce(SUM, grads)` for gradient-shaped tensors."""
    import time

    shapes = [(tuple(v.shape), v.dtype) for v in model.trainable_variables]

    @tf.function
    def allreduce():
        def replica_fn():
            grads = [tf.ones(shape, dtype) for shape, dtype in shapes]
            reduced = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, grads)
            return reduced[0][(0,) * len(shapes[0][0])]

        return strategy.experimental_local_results(strategy.run(replica_fn))[0]

    float(allreduce())  # trace, set up the collective group
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        float(allreduce())
        times.append(time.perf_counter() - started)
    size = sum(int(tf.TensorShape(s).num_elements()) * tf.as_dtype(d).size for s, d in shapes)
    return times, size


if __name__ == "__main__":
    from harness import main

    sys.exit(main(names=[NAME]))
