"""A program shaped like keras.io's distributed-training guide, on several workers.

`import keras_dp` comes first; TensorFlow ops (datasets, a tensor, a runtime
setting) come before `keras_dp.scope()`. Prints one JSON line.
"""

import json
import sys

import keras_dp

tf_imported_by_keras_dp = "tensorflow" in sys.modules

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras  # noqa: E402

# Settings that must precede TensorFlow's runtime still work after the import.
tf.config.threading.set_inter_op_parallelism_threads(2)

rng = np.random.RandomState(0)
x = rng.rand(256, 8).astype("float32")
y = (x @ rng.rand(8, 1)).astype("float32")
train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)      # before the strategy
val = tf.data.Dataset.from_tensor_slices((x[:64], y[:64])).batch(32)
offset = tf.constant(1.5)                                         # a tensor before it too

out = {"tf_imported_by_keras_dp": tf_imported_by_keras_dp}
try:
    with keras_dp.scope() as ctx:
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"),
                                  keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
except keras_dp.StrategyError as exc:
    print(json.dumps({"error": str(exc), **out}))
    sys.exit(0)
history = model.fit(train, epochs=2, validation_data=val, verbose=0)
out.update(kind=ctx.kind, workers=ctx.num_workers, index=ctx.worker_index,
           loss=history.history["loss"], val_loss=history.history["val_loss"],
           evaluate=float(model.evaluate(val, verbose=0)),
           offset=float((offset * 2).numpy()),
           weights=[w.tolist() for w in model.get_weights()])
print(json.dumps(out))
