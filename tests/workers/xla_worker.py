"""A worker of the 2-process XLA test: fit, evaluate and predict with `jit_compile=True`.

Usage: xla_worker.py OUT_DIR
Writes OUT_DIR/<run>_<worker>.npz (weights of the runs "sgd", "clipped", "adam_embedding")
and OUT_DIR/result_<worker>.json. Set XLA_FLAGS=--xla_dump_to=... to see what XLA compiled.
"""

import json
import os
import sys

import numpy as np

import keras_dp
import _problem
from keras_dp import keras_fix

out = sys.argv[1]
result = {}


def save(name, model):
    np.savez(os.path.join(out, f"{name}_{ctx.worker_index}.npz"), *model.get_weights())


with keras_dp.scope() as ctx:
    assert ctx.kind == "multi_worker_mirrored" and ctx.num_replicas == 2, ctx.strategy
    model = _problem.build_model(jit_compile=True, metrics=["mae"])
    history = model.fit(_problem.distributed_dataset(ctx.strategy), epochs=1,
                        steps_per_epoch=_problem.STEPS, verbose=0, shuffle=False)
    result["history"] = history.history
    result["eval"] = model.evaluate(_problem.distributed_dataset(ctx.strategy), steps=3,
                                    verbose=0, return_dict=True)
    result["traces"] = {kind: function.experimental_get_tracing_count()
                        for kind, function in model._keras_dp_replica_xla.items()}
    save("sgd", model)
    clipped = _problem.build_model(jit_compile=True,
                                   global_clipnorm=_problem.CLIPPING["global_clipnorm"])
    clipped.fit(_problem.distributed_dataset(ctx.strategy), epochs=1,
                steps_per_epoch=_problem.STEPS, verbose=0, shuffle=False)
    save("clipped", clipped)
    lm = _problem.embedding_lm(jit_compile=True)
    save("adam_embedding_initial", lm)   # the reference starts from these
    lm.fit(_problem.distributed_dataset(ctx.strategy, steps=_problem.LM_STEPS,
                                        global_batch=_problem.LM_BATCH,
                                        arrays=_problem.lm_data()),
           epochs=1, steps_per_epoch=_problem.LM_STEPS, verbose=0, shuffle=False)
    save("adam_embedding", lm)
x, _ = _problem.data()
result["predictions"] = model.predict(x[:32], batch_size=8, verbose=0).tolist()

# Without the part, Keras compiles the whole multi-worker step: TensorFlow cannot.
keras_fix.remove(["replica_xla"])
with ctx:
    whole = _problem.embedding_lm(jit_compile=True)
try:
    whole.fit(*_problem.lm_data(), batch_size=_problem.LM_BATCH, epochs=1, verbose=0)
    result["without_part"] = "trained"
except Exception as exc:  # noqa: BLE001 - the error is the result
    result["without_part"] = f"{type(exc).__name__}: {exc}"[:2000]
with open(os.path.join(out, f"result_{ctx.worker_index}.json"), "w") as handle:
    json.dump(result, handle)
print("worker", ctx.worker_index, "done", flush=True)
