"""A custom training loop (tf.GradientTape) for the Transformer LM, data-parallel through keras_dp.

The same file runs on one device, on several local workers and under MPI:

    python examples/custom_loop.py
    keras-dp launch -n 2 examples/custom_loop.py
    mpirun -np 2 --mca btl self,tcp --mca btl_tcp_if_include lo \\
        --mca oob_tcp_if_include lo python examples/custom_loop.py

Under mpirun, keras_dp turns OMPI_COMM_WORLD_* into TF_CONFIG; with mpi4py
installed the ranks exchange free ports through MPI (see keras_dp/mpi.py).

The loop keeps the three rules of data parallelism by hand:
1. the step runs on every replica (`ctx.run`), so `apply_gradients`
   all-reduces the gradients over replicas and workers;
2. the loss is scaled by the GLOBAL batch (`ctx.compute_loss` of per-example
   losses), not averaged over the local batch;
3. every worker reads its own shard of the data (`ctx.distribute`).

By default it trains the `tiny` Transformer LM (`keras_dp.models`, which
returns float32 logits) on the builtin corpus (Python's documentation, offline)
through `keras_dp.data.text_dataset`, whose batches depend only on the step, not
on the number of workers; it ends with a short generated sample. `--d-model`,
`--num-layers`, `--seq-len` make it smaller (the tests do). `--model mlp` trains
a small classifier on synthetic data instead. `--save-weights DIR` writes each
worker's final weights and a summary to DIR for comparison.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

MODELS = ("mlp", "lm")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="lm",
                        help="lm: the Transformer LM on the builtin corpus; mlp: a small "
                             "classifier on synthetic data (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--per-replica-batch", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="Adam's rate (default 3e-3 for lm, 1e-2 for mlp)")
    parser.add_argument("--preset", default="tiny", help="LM size preset (tiny, small, base)")
    parser.add_argument("--seq-len", type=int, default=64, help="LM sequence length")
    parser.add_argument("--d-model", type=int, default=None, help="LM width (preset's if unset)")
    parser.add_argument("--num-layers", type=int, default=None,
                        help="LM blocks (preset's if unset)")
    parser.add_argument("--sample-tokens", type=int, default=80,
                        help="LM: bytes to generate after training (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixed-precision", action="store_true",
                        help="mixed_float16 with a LossScaleOptimizer")
    parser.add_argument("--jit", action="store_true",
                        help="XLA-compile the forward and backward pass")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--save-weights", metavar="DIR",
                        help="write weights_<worker>.npz and result_<worker>.json here")
    args = parser.parse_args(argv)
    if args.learning_rate is None:
        args.learning_rate = 3e-3 if args.model == "lm" else 1e-2
    return args


def make_problem(name, ctx, global_batch, args):
    """The model, the per-example loss and the training data for `name`.

    Call under `with ctx:` so the model's variables are mirrored.

    Returns:
        `(model, per_example_loss_fn, data)`, where `data` is a
        `tf.data.Dataset` batched by the global batch, a
        `dataset_fn(input_context)`, or a distributed dataset.
    """
    import keras
    import tensorflow as tf

    # Per-example (per-token) losses from logits: compute_loss averages each
    # sequence's tokens, then divides the replica's sum by the global batch.
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    keras.utils.set_random_seed(args.seed)  # the same initial weights on every worker
    if name == "lm":
        import keras_dp

        # The LM returns float32 logits [batch, seq_len, vocab]; its position
        # table is as long as seq_len, and its byte tokenizer decodes samples.
        overrides = {k: v for k, v in (("d_model", args.d_model),
                                       ("num_layers", args.num_layers)) if v}
        model = keras_dp.models.TransformerLM.from_preset(args.preset, seq_len=args.seq_len,
                                                          **overrides)
        model.build((None, args.seq_len))
        # A distributed dataset (the strategy in scope): every worker reads only
        # its own streams; global batch s is the same for any number of workers.
        data = keras_dp.data.text_dataset("builtin", split="train", seq_len=args.seq_len,
                                          global_batch_size=global_batch, seed=args.seed)
        return model, loss, data

    features, classes = 32, 4
    rng = np.random.default_rng(args.seed)
    teacher = rng.normal(size=(features, classes)).astype("float32")
    x = rng.normal(size=(64 * global_batch, features)).astype("float32")
    y = np.argmax(x @ teacher, axis=1).astype("int32")

    def dataset_fn(input_context):
        # Each worker reads its own shard and batches by the per-replica size.
        per_replica = input_context.get_per_replica_batch_size(global_batch)
        dataset = tf.data.Dataset.from_tensor_slices((x, y))
        dataset = dataset.shard(input_context.num_input_pipelines,
                                input_context.input_pipeline_id)
        return dataset.shuffle(4096, seed=args.seed).batch(per_replica, drop_remainder=True) \
            .repeat().prefetch(2)

    model = keras.Sequential([
        keras.Input((features,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(classes, dtype="float32"),
    ])
    return model, loss, dataset_fn


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras_dp  # first: the multi-worker strategy must exist before TF starts

    ctx = keras_dp.scope()
    import keras
    import tensorflow as tf

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    global_batch = ctx.global_batch(args.per_replica_batch)
    with ctx:
        model, loss_fn, data = make_problem(args.model, ctx, global_batch, args)
        optimizer = keras.optimizers.Adam(args.learning_rate)
        if args.mixed_precision:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    def compute_gradients(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            # Rule 2: per-example losses, summed and divided by the GLOBAL batch,
            # plus regularization / replicas. Every batch here is full; without
            # global_batch_size keras_dp measures it (an all-reduce, which a
            # nested XLA function may not contain).
            loss = ctx.compute_loss(loss_fn(y, logits), global_batch_size=global_batch,
                                    model=model)
            scaled = optimizer.scale_loss(loss)  # mixed precision: times the loss scale
        return loss, tape.gradient(scaled, model.trainable_variables), logits

    if args.jit:
        compute_gradients = tf.function(compute_gradients, jit_compile=True)

    def replica_step(x, y):
        loss, grads, logits = compute_gradients(x, y)
        if args.mixed_precision:
            grads = keras_dp.loop.agree_on_finite(grads)  # all replicas skip an overflow together
        # Rule 1: inside ctx.run, Keras all-reduces the gradients over every replica.
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        accuracy.update_state(y, logits)
        return loss

    @tf.function
    def train_step(batch):
        # The replicas' losses sum to the mean loss of the global batch.
        return ctx.reduce(ctx.run(replica_step, *batch))

    chief = ctx.is_chief
    if chief:
        print(f"{ctx.describe()}; cluster from {ctx.cluster.source}; global batch "
              f"{global_batch}", flush=True)
    started, loss = time.time(), float("nan")
    # Rule 3: every worker reads its own shard.
    for step, batch in zip(range(1, args.steps + 1), ctx.distribute(data)):
        loss = float(train_step(batch))
        if step % args.log_every == 0 or step == args.steps:
            # Metric variables are summed over replicas and workers when read
            # in the cross-replica context: every worker reads them together.
            results = ctx.metric_results([accuracy])
            if chief:
                print(f"step {step}: loss {loss:.4f}, accuracy "
                      f"{float(results['accuracy']):.3f} ({time.time() - started:.1f} s)",
                      flush=True)
            accuracy.reset_state()

    if args.model == "lm" and args.sample_tokens and chief:
        print("sample: The " + model.generate("The ", args.sample_tokens, temperature=0.8,
                                              top_k=40, seed=args.seed), flush=True)
    weights = [np.array(w) for w in model.get_weights()]
    checksum = float(sum(np.sum(w.astype("float64")) for w in weights))
    print(f"worker {ctx.worker_index}: final loss {loss:.4f}, weight checksum "
          f"{checksum:.8f}", flush=True)
    if args.save_weights:
        os.makedirs(args.save_weights, exist_ok=True)
        np.savez(os.path.join(args.save_weights, f"weights_{ctx.worker_index}.npz"), *weights)
        with open(os.path.join(args.save_weights, f"result_{ctx.worker_index}.json"), "w") as f:
            json.dump({"worker": ctx.worker_index, "workers": ctx.num_workers,
                       "replicas": ctx.num_replicas, "kind": ctx.kind, "loss": loss,
                       "source": ctx.cluster.source,
                       "addresses": list(ctx.cluster.worker_addresses),
                       "notes": list(ctx.cluster.notes)}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
