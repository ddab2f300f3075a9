"""Checks of keras_dp.scope() in a fresh process (it keeps one strategy per process).

Usage: scope_checks.py CASE; prints one JSON line with the findings.
"""

import json
import sys

case = sys.argv[1]
out = {}

if case == "cpu_replicas":
    import numpy as np

    import keras
    import keras_dp

    with keras_dp.scope(cpu_replicas=2) as ctx:
        out["kind"] = ctx.kind
        out["replicas"] = ctx.num_replicas
        out["global_batch"] = ctx.global_batch(8)
        out["workers"] = ctx.num_workers
        out["chief"] = ctx.is_chief
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        out["mirrored_variable"] = type(model.weights[0].value).__name__
        x, y = np.ones((32, 3), "float32"), np.ones((32, 1), "float32")
        model.fit(x, y, batch_size=ctx.global_batch(4), epochs=1, verbose=0)  # inside
    model.fit(x, y, batch_size=ctx.global_batch(4), epochs=1, verbose=0)      # outside
    again = keras_dp.scope()
    out["same_strategy"] = again.strategy is ctx.strategy
    try:
        keras_dp.scope("one_device")
    except keras_dp.StrategyError as exc:
        out["conflict_error"] = str(exc)
    try:
        ctx.per_replica_batch(7)
    except keras_dp.ConfigError as exc:
        out["batch_error"] = str(exc)
elif case == "collectives_after_startup":
    import tensorflow as tf

    tf.constant(1.0) + 1  # starts TensorFlow's runtime before keras_dp is imported

    import keras_dp

    try:
        keras_dp.scope()
    except keras_dp.StrategyError as exc:
        out["error"] = str(exc)
elif case == "bad_environment":
    import keras_dp

    try:
        keras_dp.scope()
    except ValueError as exc:
        out["error"] = str(exc)
        out["type"] = type(exc).__name__
print(json.dumps(out))
