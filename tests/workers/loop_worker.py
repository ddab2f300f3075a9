"""A worker of the 2-process custom-loop tests (tests/test_loop_multiworker.py).

Usage: loop_worker.py OUT_DIR
Runs, in one MultiWorkerMirroredStrategy process: the GradientTape loop, the
same loop on a plain tf.data.Dataset (sharded per worker by ctx.distribute),
keras_dp.train_step, the naive recipe with and without keras_dp's check,
an unsharded input pipeline, and a metric read across workers. Writes
OUT_DIR/weights_<recipe>_<worker>.npz and OUT_DIR/result_<worker>.json.
"""

import json
import os
import sys
import warnings

import numpy as np

import keras_dp

out = sys.argv[1]
ctx = keras_dp.scope()
assert ctx.kind == "multi_worker_mirrored" and ctx.num_replicas == 2, ctx

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import _loop_problem as lp  # noqa: E402
import _problem  # noqa: E402
from keras_dp import keras_fix  # noqa: E402
from keras_dp.keras_fix import apply_check  # noqa: E402

strategy, worker = ctx.strategy, ctx.worker_index
result = {"checks_installed": keras_fix.is_applied("apply_check")}
weights = {}


def same_data_warnings(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = fn()
    return value, [str(w.message) for w in caught if issubclass(w.category,
                                                                  keras_dp.SameDataWarning)]


# The GradientTape loop on _problem's per-replica slices, and on a plain dataset.
(_, weights["tape"], result["tape_losses"]), result["tape_warnings"] = same_data_warnings(
    lambda: lp.train_tape(strategy))
x, y = _problem.data()
plain = tf.data.Dataset.from_tensor_slices((x, y)).batch(_problem.GLOBAL_BATCH)
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
(_, weights["plain"], _), result["plain_warnings"] = same_data_warnings(
    lambda: lp.train_tape(strategy, dataset=plain.with_options(options)))

# keras_dp.train_step, with a metric aggregated over both workers.
_, weights["train_step"], result["train_step_logs"] = lp.train_with_step(strategy)

# The naive recipe: keras_dp stops it, eagerly and in a tf.function ...
try:
    lp.train_naive(strategy, worker, ctx.num_workers)
    result["naive_error"] = None
except keras_dp.ReplicaContextError as exc:
    result["naive_error"] = str(exc)
try:
    lp.train_naive(strategy, worker, ctx.num_workers, compiled=True)
    result["naive_compiled_error"] = None
except tf.errors.InvalidArgumentError as exc:
    result["naive_compiled_error"] = exc.message
# ... and without the check, the workers drift apart.
keras_fix.remove(["apply_check"])
_, weights["naive"] = lp.train_naive(strategy, worker, ctx.num_workers)
apply_check.install()

# Correct code that reduces gradients itself, then applies them outside ctx.run, passes.
with strategy.scope():
    model = _problem.build_model()
    optimizer = keras.optimizers.SGD(_problem.LEARNING_RATE)


def replica_grads(x, y):
    with tf.GradientTape() as tape:
        per_example = lp.loss_fn()(y, model(x, training=True))
        loss = keras_dp.compute_loss(per_example)
    return tape.gradient(loss, model.trainable_variables)


@tf.function
def reduce_then_apply(batch):
    grads = ctx.reduce(ctx.run(replica_grads, *batch))
    optimizer.apply_gradients(zip(grads, model.trainable_variables))


for batch, _ in zip(ctx.distribute(_problem.distributed_dataset(strategy)), range(_problem.STEPS)):
    reduce_then_apply(batch)
weights["reduce_then_apply"] = [np.array(w) for w in model.get_weights()]

# An input pipeline that ignores the input context: the same data on both workers.
def unsharded(input_context):
    per_replica = input_context.get_per_replica_batch_size(_problem.GLOBAL_BATCH)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(per_replica)


_, result["unsharded_warnings"] = same_data_warnings(
    lambda: next(iter(ctx.distribute(unsharded))))

# A metric updated with a different value on each worker, read on both.
with ctx:
    mean = keras.metrics.Mean(name="mean")
ctx.run(lambda: mean.update_state(float(worker + 1)))
result["metric"] = float(ctx.metric_results([mean])["mean"])

for name, values in weights.items():
    np.savez(os.path.join(out, f"weights_{name}_{worker}.npz"), *values)
with open(os.path.join(out, f"result_{worker}.json"), "w") as handle:
    json.dump(result, handle)
print("worker", worker, "done", flush=True)
