"""A worker of the 2-process tests: fit, evaluate and predict through keras_dp.scope().

Usage: fit_worker.py OUT_DIR
Writes OUT_DIR/weights_<worker>.npz and OUT_DIR/result_<worker>.json.
"""

import json
import os
import sys

import numpy as np

import keras_dp
import _problem

out = sys.argv[1]
with keras_dp.scope() as ctx:
    model = _problem.build_model()
    assert ctx.kind == "multi_worker_mirrored", ctx.strategy
    assert ctx.num_workers == 2 and ctx.num_replicas == 2
    history = model.fit(_problem.distributed_dataset(ctx.strategy), epochs=1,
                        steps_per_epoch=_problem.STEPS, verbose=0, shuffle=False)
    evaluation = model.evaluate(_problem.distributed_dataset(ctx.strategy), steps=3,
                                verbose=0, return_dict=True)
# Gradient clipping across the 2 workers: the global gradient is clipped.
with ctx:
    clipped = _problem.build_model(global_clipnorm=_problem.CLIPPING["global_clipnorm"])
    clipped.fit(_problem.distributed_dataset(ctx.strategy), epochs=1,
                steps_per_epoch=_problem.STEPS, verbose=0, shuffle=False)
np.savez(os.path.join(out, f"weights_clipped_{ctx.worker_index}.npz"), *clipped.get_weights())
x, _ = _problem.data()
predictions = model.predict(x[:32], batch_size=8, verbose=0)
np.savez(os.path.join(out, f"weights_{ctx.worker_index}.npz"), *model.get_weights())
with open(os.path.join(out, f"result_{ctx.worker_index}.json"), "w") as handle:
    json.dump({"loss": history.history["loss"], "eval": evaluation,
               "predictions_shape": list(predictions.shape),
               "is_chief": ctx.is_chief, "tf_config": os.environ.get("TF_CONFIG"),
               "keras_fix": keras_dp.keras_fix.is_applied()}, handle)
print("worker", ctx.worker_index, "done", flush=True)
