"""A worker of the exit test: the chief saves and ends at once, the other worker comes later.

Usage: exit_worker.py OUT_DIR LATE_SECONDS every|chief
Every worker builds a small model under keras_dp's strategy; every worker (`every`, as the
TF multi-worker tutorial does at its end) or the chief alone (`chief`) calls `model.save` on
one shared path. Worker 1 sleeps LATE_SECONDS first (a slower machine), so the chief finishes
its save and reaches the end of the program before worker 1 asks whether the save is done.
Writes OUT_DIR/done_<worker> at the end.
"""

import os
import sys
import time

import keras_dp

out, late, savers = sys.argv[1], float(sys.argv[2]), sys.argv[3]
index = int(os.environ["KERAS_DP_TASK_INDEX"])

with keras_dp.scope() as ctx:
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
if index == 1:
    time.sleep(late)
if savers == "every" or ctx.is_chief:
    model.save(os.path.join(out, "model.keras"))
open(os.path.join(out, f"done_{index}"), "w").close()
