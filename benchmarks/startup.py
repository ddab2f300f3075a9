"""Start-up: from launch to the first finished training step, for 1 and 2 workers.

    python benchmarks/startup.py [--smoke] [--rounds N] [--steps N] [--out DIR]

The parent notes the time, then starts the workers with keras_dp's launcher
(what `keras-dp launch -n N` does). Each worker notes when it reaches each
phase (wall-clock times, same machine, so the parent's and the workers'
clocks agree):

| phase | from -> to |
| --- | --- |
| process start | launch -> the worker's first Python line |
| TF import | -> `import tensorflow, keras` done |
| cluster formation | -> `keras_dp.scope()` returned (TF_CONFIG resolved, strategy created; with 2 workers: every peer connected to the coordination service) |
| model + data | -> model built and compiled, input pipeline created |
| fit set-up | -> `fit` reaches its first step (Keras' own set-up, the iterator) |
| first step | -> the first step finished: tracing, XLA compilation, one step |

The workload is the default job's (`tiny` LM, 32 x 128 tokens per replica).
Launches compared: 1 worker and 2 workers with XLA off (XLA cannot compile a
multi-worker step on CPU: TensorFlow has no XLA CPU kernels for the
collectives, e.g. `CollectiveGatherV2` for the embedding's sparse gradient),
and 1 worker with XLA (the default job's setting on one worker), to show
what XLA compilation adds. The second step's duration is given for scale.
The launches alternate (order reversed every other round) for `rounds`
rounds.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, List

from harness.common import BenchOptions, median, run_children, say, table

NAME = "startup"
PHASES = ["process start", "TF import", "cluster formation", "model + data", "fit set-up",
          "first step"]
_MARKS = ["launched", "started", "imported", "scope", "built", "fit_begin", "first_step"]


def settings(options: BenchOptions) -> Dict[str, Any]:
    smoke = options.smoke
    # (label, workers, XLA); the labels are the keys of the result's summary.
    launches = [["1", 1, False], ["2", 2, False]]
    if not smoke:
        launches.append(["1 (XLA)", 1, True])
    return {"launches": launches, "rounds": options.pick("rounds", 3, 1), "preset": "tiny",
            "seq_len": 32 if smoke else 128, "batch": 4 if smoke else 32,
            "model": options.model()}


def phases(marks: Dict[str, float]) -> Dict[str, float]:
    """Seconds of each phase from a worker's wall-clock marks."""
    return {name: marks[_MARKS[i + 1]] - marks[_MARKS[i]] for i, name in enumerate(PHASES)}


def run(options: BenchOptions) -> Dict[str, Any]:
    config = settings(options)
    say(f"startup: launch -> first finished step; tiny LM, {config['batch']} x "
        f"{config['seq_len']} tokens per replica; {config['rounds']} round(s) alternating "
        + ", ".join(f"{count} worker(s) XLA {'on' if xla else 'off'}"
                    for _, count, xla in config["launches"]))
    runs: List[Dict[str, Any]] = []
    for round_index in range(config["rounds"]):
        launches = config["launches"]
        for key, count, xla in (launches if round_index % 2 == 0 else launches[::-1]):
            workers = run_children(__name__, dict(config, xla=xla), count, options=options,
                                   label=f"startup-{count}w-{'xla-' if xla else ''}"
                                         f"round{round_index + 1}")
            for worker in workers:
                worker["phases"] = phases(worker["marks"])
                worker["total"] = worker["marks"]["first_step"] - worker["marks"]["launched"]
            runs.append({"key": key, "workers": count, "xla": xla, "round": round_index + 1,
                         "results": workers})
            slowest = max(w["total"] for w in workers)
            say(f"round {round_index + 1}, {count} worker(s), XLA {'on' if xla else 'off'}: "
                f"first step after {slowest:.1f} s (load {workers[0]['load']:.2f})")
    rows, summary = [], {}
    for key, count, xla in config["launches"]:
        # The slowest worker of each launch is when the job has taken its first step.
        chosen = [max(r["results"], key=lambda w: w["total"]) for r in runs
                  if r["key"] == key]
        entry = {name: median(w["phases"][name] for w in chosen) for name in PHASES}
        entry["total"] = median(w["total"] for w in chosen)
        entry["total_min"] = min(w["total"] for w in chosen)
        entry["total_max"] = max(w["total"] for w in chosen)
        entry["second_step"] = median(w["second_step"] for w in chosen)
        entry.update(workers=count, xla=xla,
                     label=f"{count} worker(s), XLA {'on' if xla else 'off'}")
        summary[key] = entry
        rows.append([entry["label"], *[entry[name] for name in PHASES], entry["total"],
                     f"{entry['total_min']:.1f}..{entry['total_max']:.1f}",
                     entry["second_step"]])
    say("")
    say(table(["launch", *PHASES, "total", "over rounds", "2nd step"], rows))
    say("seconds, median over rounds of the slowest worker; with 2 workers 'cluster "
        "formation' includes waiting for the other worker's TF import")
    return {"settings": config, "summary": summary, "runs": runs}


def child(config: Dict[str, Any]) -> Dict[str, Any]:
    import os

    marks = {"launched": config["_launched"], "started": config["_started"]}
    import keras  # noqa: F401
    import tensorflow as tf  # noqa: F401

    marks["imported"] = time.time()
    from harness import workload

    import keras_dp

    context = keras_dp.scope()
    marks["scope"] = time.time()
    with context:
        model = workload.build_lm(config["preset"], seq_len=config["seq_len"], xla=config["xla"],
                            **config.get("model", {}))
    data = keras_dp.data.text_dataset("builtin", seq_len=config["seq_len"],
                                      global_batch_size=context.global_batch(config["batch"]))
    marks["built"] = time.time()

    class Marks(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                marks["fit_begin"] = time.time()

        def on_train_batch_end(self, batch, logs=None):
            marks["first_step" if batch == 0 else "second_step"] = time.time()

    model.fit(data, epochs=1, steps_per_epoch=2, callbacks=[Marks()], verbose=0)
    return {"marks": marks, "second_step": marks["second_step"] - marks["first_step"],
            "strategy": context.describe(), "load": os.getloadavg()[0]}


if __name__ == "__main__":
    from harness import main

    sys.exit(main(names=[NAME]))
