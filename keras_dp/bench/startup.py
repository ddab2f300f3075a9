"""Start-up: from launch to the first finished training step, for 1 and 2 workers.

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

The workload is the default job's (`tiny` LM, 32 x 128 tokens per replica,
XLA). The second step's duration is given for scale. 1 and 2 workers
alternate for `rounds` rounds.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List

from keras_dp.bench.common import BenchOptions, median, run_children, say, table

NAME = "startup"
PHASES = ["process start", "TF import", "cluster formation", "model + data", "fit set-up",
          "first step"]
_MARKS = ["launched", "started", "imported", "scope", "built", "fit_begin", "first_step"]


def settings(options: BenchOptions) -> Dict[str, Any]:
    smoke = options.smoke
    return {"worker_counts": [1, 2], "rounds": options.pick("rounds", 3, 1), "preset": "tiny",
            "seq_len": 32 if smoke else 128, "batch": 4 if smoke else 32, "xla": not smoke,
            "model": options.model()}


def phases(marks: Dict[str, float]) -> Dict[str, float]:
    """Seconds of each phase from a worker's wall-clock marks."""
    return {name: marks[_MARKS[i + 1]] - marks[_MARKS[i]] for i, name in enumerate(PHASES)}


def run(options: BenchOptions) -> Dict[str, Any]:
    config = settings(options)
    say(f"startup: launch -> first finished step; tiny LM, {config['batch']} x "
        f"{config['seq_len']} tokens per replica, XLA {'on' if config['xla'] else 'off'}; "
        f"{config['rounds']} round(s) alternating 1 and 2 workers")
    runs: List[Dict[str, Any]] = []
    for round_index in range(config["rounds"]):
        counts = config["worker_counts"]
        for count in (counts if round_index % 2 == 0 else counts[::-1]):
            workers = run_children(__name__, config, count, options=options,
                                   label=f"startup-{count}w-round{round_index + 1}")
            for worker in workers:
                worker["phases"] = phases(worker["marks"])
                worker["total"] = worker["marks"]["first_step"] - worker["marks"]["launched"]
            runs.append({"workers": count, "round": round_index + 1, "results": workers})
            slowest = max(w["total"] for w in workers)
            say(f"round {round_index + 1}, {count} worker(s): first step after {slowest:.1f} s "
                f"(load {workers[0]['load']:.2f})")
    rows, summary = [], {}
    for count in config["worker_counts"]:
        # The slowest worker of each launch is when the job has taken its first step.
        chosen = [max(r["results"], key=lambda w: w["total"]) for r in runs
                  if r["workers"] == count]
        entry = {name: median(w["phases"][name] for w in chosen) for name in PHASES}
        entry["total"] = median(w["total"] for w in chosen)
        entry["second_step"] = median(w["second_step"] for w in chosen)
        summary[str(count)] = entry
        rows.append([f"{count} worker(s)", *[entry[name] for name in PHASES], entry["total"],
                     entry["second_step"]])
    say("")
    say(table(["launch", *PHASES, "total", "2nd step"], rows))
    say("seconds, median over rounds of the slowest worker; with 2 workers 'cluster "
        "formation' includes waiting for the other worker's TF import")
    return {"settings": config, "summary": summary, "runs": runs}


def child(config: Dict[str, Any]) -> Dict[str, Any]:
    import os

    marks = {"launched": config["_launched"], "started": config["_started"]}
    import keras  # noqa: F401
    import tensorflow as tf  # noqa: F401

    marks["imported"] = time.time()
    from keras_dp.bench import lm

    import keras_dp

    context = keras_dp.scope()
    marks["scope"] = time.time()
    with context:
        model = lm.build_lm(config["preset"], seq_len=config["seq_len"], xla=config["xla"],
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
