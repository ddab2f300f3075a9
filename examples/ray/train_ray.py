"""keras_dp inside Ray Train's `TensorflowTrainer`.

Ray starts the worker processes and sets `TF_CONFIG` in each of them;
`keras_dp.scope()` reads it (cluster source `tf_config`, used unchanged),
creates the MultiWorkerMirroredStrategy and applies keras_dp's Keras 3 fix.
Without the fix, the `model.fit` of Ray's own TensorflowTrainer example
crashes on Keras 3 with `ValueError: Attempt to convert a value
(PerReplica:{...}) ... to a Tensor` (ray-project/ray#47464; Ray's answer is
TF_USE_LEGACY_KERAS=1, which it sets in every worker: it only makes
`tf.keras` mean Keras 2, and needs the `tf_keras` package). Here the loop
uses Keras 3 (`import keras`) and `model.fit` works.

    pip install "keras-dp[cpu,ray]"
    python examples/ray/train_ray.py                       # a local Ray with 2 workers
    python examples/ray/train_ray.py --address auto --num-workers 8 --use-gpu \\
        --storage-path /shared/ray_results                  # a running Ray cluster

Each worker trains the Transformer LM on its shard of every global batch.
After every epoch each worker reports the loss to Ray, and the chief's saved
model becomes a Ray checkpoint. `keras_dp.callbacks.BackupAndRestore` in
the run's storage folder lets Ray's `FailureConfig(max_failures=...)`
restart the workers and resume at the exact step (on several nodes the
storage path must be a shared filesystem).

A local Ray is started on 127.0.0.1 only (no dashboard): Ray otherwise
advertises this machine's network address to its workers, and TF_CONFIG
would carry it.
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--address", default=None,
                        help="a running Ray cluster ('auto', 'ray://host:10001'); default: "
                             "start a local one on 127.0.0.1")
    parser.add_argument("--storage-path", default=os.path.abspath("ray_results"),
                        help="where Ray keeps checkpoints (shared by all nodes)")
    parser.add_argument("--name", default="keras_dp_lm")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per replica")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--max-failures", type=int, default=2,
                        help="restarts of the workers after a failure (resume from the backup)")
    parser.add_argument("--no-xla", action="store_true")
    return parser.parse_args(argv)


def train_loop_per_worker(config):
    """What every Ray worker runs: plain keras_dp code, TF_CONFIG comes from Ray."""
    import keras
    import ray.train

    import keras_dp

    with keras_dp.scope() as ctx:  # Ray's TF_CONFIG -> MultiWorkerMirroredStrategy
        batch = ctx.global_batch(config["batch_size"])
        data = keras_dp.data.text_dataset("builtin", seq_len=config["seq_len"],
                                          global_batch_size=batch, seed=0)
        keras.utils.set_random_seed(0)
        model = keras_dp.models.TransformerLM.from_preset("tiny", seq_len=config["seq_len"])
        rate = keras_dp.schedules.scaled_learning_rate(5e-3, batch, base_batch=32)
        model.compile(optimizer=keras.optimizers.AdamW(keras_dp.schedules.WarmupSchedule(
            rate, warmup_steps=config["steps"] // 10, decay_steps=config["steps"])),
            jit_compile=config["xla"])
    if ctx.is_chief:
        print(f"keras_dp under Ray: {ctx.describe()}; cluster from {ctx.cluster.source}: "
              f"{', '.join(ctx.cluster.worker_addresses)}; global batch {batch}", flush=True)

    model_dir = tempfile.mkdtemp(prefix="keras_dp_ray_")

    class ReportToRay(keras.callbacks.Callback):
        """After each epoch: metrics from every worker, the chief's model as the checkpoint."""

        def on_epoch_end(self, epoch, logs=None):
            metrics = {k: float(v) for k, v in (logs or {}).items()}
            metrics.update(epoch=epoch + 1, workers=ctx.num_workers, replicas=ctx.num_replicas)
            checkpoint = ray.train.Checkpoint.from_directory(model_dir) if ctx.is_chief else None
            ray.train.report(metrics, checkpoint=checkpoint)  # every worker calls it

    callbacks = [
        keras_dp.callbacks.BackupAndRestore(config["backup_dir"],
                                            save_freq=max(1, config["steps"] // 6)),
        keras_dp.callbacks.ModelCheckpoint(os.path.join(model_dir, "model.keras")),
        ReportToRay(),
    ]
    epochs = config["epochs"]
    model.fit(data, epochs=epochs, steps_per_epoch=config["steps"] // epochs,
              callbacks=callbacks, verbose=0)
    checksum = float(sum(np.sum(w.astype("float64")) for w in model.get_weights()))
    print(f"keras_dp worker {ctx.worker_index}: weights checksum {checksum:.10f}", flush=True)


def main(argv=None):
    args = parse_args(argv)
    if args.address is None:
        # Ray replaces 127.0.0.1 by the machine's address unless told (before
        # `import ray`) that this is a one-machine cluster; then its services,
        # and the addresses in TF_CONFIG, stay on loopback.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    if args.address is None:
        ray.init(num_cpus=max(args.num_workers, os.cpu_count() or 1), include_dashboard=False)
    else:
        ray.init(address=args.address)
    trainer = TensorflowTrainer(
        train_loop_per_worker,
        train_loop_config={
            "steps": args.steps, "epochs": args.epochs, "batch_size": args.batch_size,
            "seq_len": args.seq_len, "xla": not args.no_xla,
            "backup_dir": os.path.join(args.storage_path, args.name, "keras_dp_backup")},
        scaling_config=ScalingConfig(num_workers=args.num_workers, use_gpu=args.use_gpu),
        run_config=RunConfig(name=args.name, storage_path=args.storage_path,
                             failure_config=FailureConfig(max_failures=args.max_failures)))
    result = trainer.fit()
    ray.shutdown()
    if result.error:
        print(f"training failed: {result.error}", file=sys.stderr)
        return 1
    summary = {"metrics": result.metrics,
               "checkpoint": result.checkpoint.path if result.checkpoint else None}
    print("result: " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
