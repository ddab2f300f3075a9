"""1 vs 2 workers, loss at the same step, every 20 steps (a diagnostic of `benchmarks/convergence.py`).

Trains the default `keras-dp train` job for `--steps` steps (360) with a
validation every 20 steps, as 1 worker and as 2 MultiWorkerMirroredStrategy
workers with the same global batch (so the same global batches), and prints
the training and validation loss (nats) of both at every 20th step with their
difference. Whether the differences keep one sign (a systematic difference)
or change sign (rounding, amplified by Adam) is what it shows.

Without `--xla` both runs are without XLA; with it, both compile with XLA: the
whole step in the 1-worker run, each replica's forward and backward pass in
the 2-worker run (keras_fix part `replica_xla`), so it checks that path too.

    python benchmarks/same_step_check.py [--xla] [--steps 360] [OUT_DIR]
"""

import argparse

from harness.common import BenchOptions, run_children


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="keras_dp_bench_same_step")
    parser.add_argument("--xla", action="store_true", help="both runs with XLA")
    parser.add_argument("--steps", type=int, default=360)
    args = parser.parse_args()
    options = BenchOptions(out=args.out)
    losses = {}
    for workers in (1, 2):
        train = {"global_batch_size": 32, "progress": "none", "xla": args.xla,
                 "steps": args.steps, "validate_every": 20, "val_steps": 4,
                 "output_dir": f"{args.out}/run-{workers}w"}
        chief = run_children("convergence", {"train": train}, workers,
                             options=options, label=f"same-step-{workers}w")[0]
        losses[workers] = [(p["step"], p["loss"], p["val_loss"]) for p in chief["timeline"]]
    print(f"XLA {'on' if args.xla else 'off'} in both runs")
    print("step  train 1w  train 2w  difference  val 1w  val 2w  difference  (nats)")
    worst = 0.0
    for (step, train_1, val_1), (_, train_2, val_2) in zip(losses[1], losses[2]):
        worst = max(worst, abs(train_2 - train_1), abs(val_2 - val_1))
        print(f"{step:4d}  {train_1:.5f}  {train_2:.5f}  {train_2 - train_1:+.2e}  "
              f"{val_1:.5f}  {val_2:.5f}  {val_2 - val_1:+.2e}")
    print(f"largest difference: {worst:.2e} nats over {len(losses[1])} points")


if __name__ == "__main__":
    main()
