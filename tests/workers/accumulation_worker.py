"""A worker of the 2-process accumulation test: Adam with gradient_accumulation_steps=2.

Usage: accumulation_worker.py OUT_DIR
Writes OUT_DIR/accumulated_<worker>.npz and OUT_DIR/accumulated_<worker>.json.
"""

import json
import os
import sys

import numpy as np

import _accumulation
import keras_dp


class _Patch:
    """The bit of pytest's monkeypatch `count_all_reduces` uses."""

    def setattr(self, owner, name, value):
        setattr(owner, name, value)


out = sys.argv[1]
with keras_dp.scope() as ctx:
    assert ctx.kind == "multi_worker_mirrored" and ctx.num_replicas == 2, ctx.strategy
counter = _accumulation.count_all_reduces(ctx.strategy, _Patch())
model, weights = _accumulation.train(ctx.strategy)
np.savez(os.path.join(out, f"accumulated_{ctx.worker_index}.npz"), *weights)
with open(os.path.join(out, f"accumulated_{ctx.worker_index}.json"), "w") as handle:
    json.dump({"all_reduces": int(counter.numpy()),
               "iterations": int(model.optimizer.iterations.numpy()),
               "micro_batches": int(model.optimizer._iterations.numpy())}, handle)
print("worker", ctx.worker_index, "done", flush=True)
