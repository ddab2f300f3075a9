"""1 vs 2 workers, loss at the same step, every 20 steps (a diagnostic of `keras-dp bench convergence`).

Trains the default `keras-dp train` job without XLA (multi-worker steps cannot
be XLA-compiled on CPU) for 360 steps with a validation every 20 steps, as
1 worker and as 2 MultiWorkerMirroredStrategy workers with the same global
batch (so the same global batches), and prints the training and validation
loss (nats) of both at every 20th step with their difference. Whether the
differences keep one sign (a systematic difference) or change sign (rounding,
amplified by Adam) is what it shows.

    python benchmarks/same_step_check.py [OUT_DIR]
"""

import sys

from keras_dp.bench.common import BenchOptions, run_children


def main(out: str = "keras_dp_bench_same_step") -> None:
    options = BenchOptions(out=out)
    losses = {}
    for workers in (1, 2):
        train = {"global_batch_size": 32, "progress": "none", "xla": False, "steps": 360,
                 "validate_every": 20, "val_steps": 4, "output_dir": f"{out}/run-{workers}w"}
        chief = run_children("keras_dp.bench.convergence", {"train": train}, workers,
                             options=options, label=f"same-step-{workers}w")[0]
        losses[workers] = [(p["step"], p["loss"], p["val_loss"]) for p in chief["timeline"]]
    print("step  train 1w  train 2w  difference  val 1w  val 2w  difference  (nats)")
    for (step, train_1, val_1), (_, train_2, val_2) in zip(losses[1], losses[2]):
        print(f"{step:4d}  {train_1:.5f}  {train_2:.5f}  {train_2 - train_1:+.2e}  "
              f"{val_1:.5f}  {val_2:.5f}  {val_2 - val_1:+.2e}")


if __name__ == "__main__":
    main(*sys.argv[1:])
