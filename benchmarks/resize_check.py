"""Resuming on another number of workers: how far from the uninterrupted run, and why.

Trains the default `keras-dp train` job (tiny preset, global batch 64) for
`--steps` steps (default 60, a backup every 20) and compares final weights
(max abs difference) of:

- `2w`: 2 workers, uninterrupted (the reference);
- `2w-again`: the same, again (is a 2-worker run repeatable bit for bit?);
- `1w`: 1 process, uninterrupted, no XLA (the floor: 1 vs 2 replicas only
  differ in the order the gradient's terms are summed);
- `1w-xla`: 1 process, uninterrupted, XLA (what `keras-dp train` picks for
  one CPU replica by default);
- `1x2`: 1 process with 2 CPU replicas (MirroredStrategy): the gradient is
  summed as 2 workers sum it (two half-batch sums, then their sum);
- `2w->2w`, `2w->1w`, `2w->1w-xla`, `2w->1x2`: 2 workers killed (SIGKILL of
  worker 1) after the backup of step `--kill-at` (default 40), finished by 2
  workers, by 1 process without / with XLA, and by 1 process with 2 CPU
  replicas (`--cpu-replicas 2`).

    python benchmarks/resize_check.py [--out DIR] [--steps 60] [--kill-at 40] [--only NAMES]

Run it under the CPU lock in chunks (`--only 2w,1w`, then the others) on a
shared machine. Prints one line per comparison; JSON in OUT/resize.json.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "fault_worker.py")


def train_args(out: str, steps: int) -> list:
    return ["--steps", str(steps), "--backup-every", "20", "--global-batch-size", "64",
            "--sample-tokens", "0", "--progress", "none", "--output-dir", out]


def run(command: list, expect_ok: bool = True) -> int:
    proc = subprocess.run(command, capture_output=True, text=True)
    if expect_ok and proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.returncode


def launch(n: int, out: str, steps: int, extra=(), fault=None) -> int:
    command = [sys.executable, "-m", "keras_dp", "launch", "-n", str(n), "--", sys.executable,
               WORKER]
    if fault:
        command += ["--fault", *fault]
    return run(command + ["--", *train_args(out, steps), *extra], expect_ok=fault is None)


def single(out: str, steps: int, extra=()) -> int:
    return run([sys.executable, WORKER, "--", *train_args(out, steps), *extra])


def weights(out: str):
    import keras

    import keras_dp.models  # noqa: F401 - registers TransformerLM

    return keras.saving.load_model(os.path.join(out, "model.keras")).get_weights()


def _losses(out: str) -> list:
    with open(os.path.join(out, "train_state.json"), encoding="utf-8") as handle:
        return json.load(handle)["history"]["val_loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="keras_dp_resize_check")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--kill-at", type=int, default=40)
    parser.add_argument("--only", default=None, help="comma-separated run names")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    path = lambda name: os.path.join(args.out, name.replace(">", ""))  # noqa: E731
    fault = ["1", "0", f"step:{args.kill_at + 1}", "SIGKILL"]

    def killed():
        base = path("2w-killed")
        if not os.path.exists(os.path.join(base, "backup")):
            shutil.rmtree(base, ignore_errors=True)
            assert launch(2, base, args.steps, fault=fault) != 0
        return base

    def resumed(name, finish):
        shutil.rmtree(path(name), ignore_errors=True)
        shutil.copytree(killed(), path(name))
        finish(path(name))

    runs = {
        "2w": lambda: launch(2, path("2w"), args.steps),
        "2w-again": lambda: launch(2, path("2w-again"), args.steps),
        "1w": lambda: single(path("1w"), args.steps, ["--no-xla"]),
        "1w-xla": lambda: single(path("1w-xla"), args.steps, ["--xla"]),
        "1x2": lambda: single(path("1x2"), args.steps, ["--cpu-replicas", "2"]),
        "2w->2w": lambda: resumed("2w->2w", lambda o: launch(2, o, args.steps)),
        "2w->1w": lambda: resumed("2w->1w", lambda o: single(o, args.steps, ["--no-xla"])),
        "2w->1w-xla": lambda: resumed("2w->1w-xla", lambda o: single(o, args.steps, ["--xla"])),
        "2w->1x2": lambda: resumed("2w->1x2", lambda o: single(
            o, args.steps, ["--cpu-replicas", "2"])),
    }
    for name, start in runs.items():
        if (only is None or name in only) and not os.path.exists(
                os.path.join(path(name), "model.keras")):
            print(f"running {name} ...", flush=True)
            start()
    results_file = os.path.join(args.out, "resize.json")
    results = json.load(open(results_file)) if os.path.exists(results_file) else {}
    if os.path.exists(os.path.join(path("2w"), "model.keras")):
        reference = weights(path("2w"))
        for name in runs:
            if name == "2w" or not os.path.exists(os.path.join(path(name), "model.keras")):
                continue
            diff = max(float(np.max(np.abs(a - b))) for a, b in zip(weights(path(name)),
                                                                     reference))
            losses = [_losses(path(n)) for n in (name, "2w")]
            loss_diff = max(abs(a - b) for a, b in zip(*losses))
            results[name] = {"weights": diff, "val_loss": loss_diff}
            print(f"{name:12s} vs 2w: weights max abs diff {diff:.2e}; validation losses "
                  f"max abs diff {loss_diff:.1e} nats")
    with open(results_file, "w") as handle:
        json.dump({"steps": args.steps, "kill_at": args.kill_at, **results}, handle, indent=1)


if __name__ == "__main__":
    main()
