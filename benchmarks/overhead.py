"""Overhead: keras_dp versus hand-written tf.distribute, same LM, same step.

    python benchmarks/overhead.py [--smoke] [--rounds N] [--steps N] [--out DIR]

One process trains the same model twice, each on its own copy:

- hand-written: the CPU split into logical devices with `tf.config` by hand,
  `tf.distribute.MirroredStrategy(devices)` (or TensorFlow's default strategy
  for one replica) created by hand, the input pipeline written by hand
  (`harness.workload.handwritten_dataset_fn`) and distributed with
  `strategy.distribute_datasets_from_function`;
- keras_dp: `keras_dp.scope(cpu_replicas=N)` and
  `keras_dp.data.text_dataset("builtin", ...)`.

The hand-written model is built and traced first, before keras_dp creates
its strategy (keras_dp's checks only act while a step is traced; the
compiled steps are what is timed). Then both train in alternating bursts
(ABBA order: keras_dp, hand, hand, keras_dp, ...), so drift in the machine's
load hits both alike. Reported: the median step time of each over all timed
steps, and the ratio hand-written / keras_dp (>= 0.99 is the goal: keras_dp
adds nothing to the step), with each burst pair's ratio for the spread.

XLA: the 1-replica runs compile the step with XLA (the default job's
setting); the 2-replica runs cannot: XLA compiles the whole step for the
first CPU device, so a MirroredStrategy over logical CPU devices fails with
"Trying to access resource .../replica_1 located in device CPU:1 from device
CPU:0" (TensorFlow's "tf.Variable on a different device" XLA limitation). Both
sides of a comparison always use the same setting.

A multi-worker baseline is not measured: hand-written Keras 3 `fit` under
MultiWorkerMirroredStrategy crashes (the bugs keras_dp/keras_fix/ fixes),
so there is nothing to compare with.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List

from harness.common import (BenchOptions, median, ratio, run_children, say, summarize,
                                   table)

NAME = "overhead"
GOAL = 0.99


def settings(options: BenchOptions) -> Dict[str, Any]:
    smoke = options.smoke
    return {
        "replica_counts": [2] if smoke else [1, 2],
        "bursts": options.pick("rounds", 6, 2),
        "steps": options.pick("steps", 25, 4),
        "warmup_steps": 2 if smoke else 4,
        "preset": "tiny",
        "seq_len": 32 if smoke else 128,
        "batch": 4 if smoke else 32,
        "xla": not smoke,
        "model": options.model(),
    }


def run(options: BenchOptions) -> Dict[str, Any]:
    config = settings(options)
    say(f"overhead: tiny LM, {config['batch']} sequences x {config['seq_len']} tokens per "
        f"replica, XLA {'on for 1 replica' if config['xla'] else 'off'}; "
        f"{config['bursts']} alternating "
        f"bursts of {config['steps']} steps each (first step of a burst not timed)")
    result: Dict[str, Any] = {"settings": config, "runs": []}
    for replicas in config["replica_counts"]:
        xla = bool(config["xla"]) and replicas == 1  # see the module docstring
        child = run_children(__name__, dict(config, replicas=replicas, xla=xla), 1,
                             options=options, label=f"overhead-{replicas}r")[0]
        kdp = [t for burst in child["keras_dp"] for t in burst]
        hand = [t for burst in child["handwritten"] for t in burst]
        pairs = [ratio(median(h), median(k)) for h, k in
                 zip(child["handwritten"], child["keras_dp"])]
        entry = {
            "replicas": replicas, "xla": xla, "strategy": child["strategy"],
            "hand_strategy": child["hand_strategy"], "load": child["load"],
            "keras_dp": summarize(kdp), "handwritten": summarize(hand),
            "ratio": ratio(median(hand), median(kdp)),
            "burst_ratios": pairs, "raw": child,
            "tokens_per_step": replicas * config["batch"] * config["seq_len"],
        }
        result["runs"].append(entry)
        say(f"\n{replicas} replica(s), XLA {'on' if xla else 'off'}: keras_dp uses "
            f"{child['strategy']}, the hand-written code {child['hand_strategy']}; load average during the run "
            f"{child['load'][0]:.2f} -> {child['load'][1]:.2f}")
        rows = []
        for i, (k, h) in enumerate(zip(child["keras_dp"], child["handwritten"])):
            rows.append([i + 1, child["order"][i], 1000 * median(k), 1000 * median(h),
                         pairs[i]])
        say(table(["burst", "order", "keras_dp ms/step", "hand ms/step", "hand/keras_dp"],
                  rows))
        tokens = entry["tokens_per_step"]
        say(f"median step: keras_dp {1000 * entry['keras_dp']['median']:.2f} ms "
            f"({tokens / entry['keras_dp']['median']:,.0f} tokens/s, n={len(kdp)}), "
            f"hand-written {1000 * entry['handwritten']['median']:.2f} ms "
            f"({tokens / entry['handwritten']['median']:,.0f} tokens/s, n={len(hand)})")
        verdict = "meets" if entry["ratio"] >= GOAL else "misses"
        say(f"step-time ratio hand-written / keras_dp = {entry['ratio']:.4f} ({verdict} the "
            f"goal >= {GOAL}); per burst pair {min(pairs):.3f}..{max(pairs):.3f}")
    return result


def child(config: Dict[str, Any]) -> Dict[str, Any]:
    import os

    import tensorflow as tf

    from harness import workload

    replicas = int(config["replicas"])
    load_before = os.getloadavg()[0]
    workload.configure_threads(config)
    workload.split_cpu(replicas)  # by hand, as hand-written code does
    workload.set_seed(0)
    seq_len, batch = int(config["seq_len"]), int(config["batch"])
    global_batch = batch * replicas

    # -- the hand-written tf.distribute code --------------------------------
    if replicas > 1:
        hand_strategy = tf.distribute.MirroredStrategy(
            [f"/cpu:{i}" for i in range(replicas)])
    else:
        hand_strategy = tf.distribute.get_strategy()
    with hand_strategy.scope():
        hand_model = workload.build_lm(config["preset"], seq_len=seq_len, xla=config["xla"],
                                 **config["model"])
    hand_data = hand_strategy.distribute_datasets_from_function(
        workload.handwritten_dataset_fn(workload.builtin_tokens(), seq_len, global_batch))
    workload.timed_fit(hand_model, hand_data, config["warmup_steps"])

    # -- keras_dp -----------------------------------------------------------
    import keras_dp

    context = keras_dp.scope(cpu_replicas=replicas if replicas > 1 else None)
    with context:
        kdp_model = workload.build_lm(config["preset"], seq_len=seq_len, xla=config["xla"],
                                 **config["model"])
    kdp_data = keras_dp.data.text_dataset("builtin", seq_len=seq_len,
                                          global_batch_size=context.global_batch(batch))
    workload.timed_fit(kdp_model, kdp_data, config["warmup_steps"])

    runs = {"keras_dp": (kdp_model, kdp_data), "handwritten": (hand_model, hand_data)}
    times: Dict[str, List[List[float]]] = {"keras_dp": [], "handwritten": []}
    order = []
    for burst in range(int(config["bursts"])):
        names = ["keras_dp", "handwritten"] if burst % 2 == 0 else ["handwritten", "keras_dp"]
        order.append("K,H" if burst % 2 == 0 else "H,K")
        for name in names:
            model, data = runs[name]
            times[name].append(workload.timed_fit(model, data, config["steps"]))
    return {
        **times, "order": order,
        "strategy": f"{type(context.strategy).__name__} via keras_dp.scope() "
                    f"({context.num_replicas} replica(s))",
        "hand_strategy": f"{type(hand_strategy).__name__} "
                         f"({hand_strategy.num_replicas_in_sync} replica(s))",
        "load": [load_before, os.getloadavg()[0]],
    }


if __name__ == "__main__":
    from harness import main

    sys.exit(main(names=[NAME]))
