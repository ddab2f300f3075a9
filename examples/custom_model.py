"""keras_dp with your own Keras model and your own tf.data / tensorflow-datasets pipeline.

Not the bundled LM: a small image classifier (a Keras functional model) on a
tensorflow-datasets dataset read by a per-worker `tf.data` pipeline. It shows
what changes when a `model.fit` script becomes data-parallel with keras_dp:

1. `with keras_dp.scope() as ctx:` around model building and `compile`;
2. the batch: you choose the per-replica batch, `ctx.global_batch(...)` is
   what one optimizer step sees over all replicas and workers;
3. the input: a `dataset_fn(input_context)` that reads only this worker's
   files (`tfds.ReadConfig(input_context=...)`) and batches by the
   per-replica batch, turned into a distributed dataset by
   `keras_dp.data.distribute`;
4. the callbacks: `keras_dp.callbacks.BackupAndRestore` (resumes at the exact
   step after a crash or a preemption), chief-only `ModelCheckpoint` and
   `CSVLogger`, and `Throughput`.

    python examples/custom_model.py                     # one process
    keras-dp launch -n 2 examples/custom_model.py       # two workers (or SLURM, mpirun, ...)
    keras-dp launch -n 2 --max-restarts 3 examples/custom_model.py   # survives a killed worker

By default it trains on `shapes16`, a small synthetic dataset of 16x16
images of four shapes that it writes once into `--data-dir` as a sharded
tensorflow-datasets dataset (no download). Any prepared tfds image
classification dataset works too: `--dataset mnist --data-dir ~/tensorflow_datasets`.
"""

import argparse
import os
import sys

import numpy as np

import keras_dp

SHAPES = ("horizontal bar", "vertical bar", "square", "ring")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="shapes16",
                        help="a tfds image dataset with 'image' and 'label' features "
                             "(default: shapes16, written on first use)")
    parser.add_argument("--data-dir", default=os.path.expanduser("~/tensorflow_datasets"))
    parser.add_argument("--output-dir", default="custom_model_output")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="default: one pass over the training split")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per replica")
    parser.add_argument("--learning-rate", type=float, default=2e-3,
                        help="for a global batch of 32; scaled linearly to the global batch")
    parser.add_argument("--no-xla", action="store_true", help="skip XLA compilation")
    return parser.parse_args(argv)


# -- the data: a tensorflow-datasets dataset on disk --------------------------------
def write_shapes16(data_dir, train_examples=8192, val_examples=1024, shards=8):
    """Writes `shapes16` (16x16 grey images of four shapes in noise) as a tfds dataset."""
    import tensorflow_datasets as tfds

    def examples(count, seed):
        rng = np.random.default_rng(seed)
        for i in range(count):
            label = int(rng.integers(len(SHAPES)))
            image = rng.integers(0, 90, (16, 16, 1)).astype(np.uint8)
            row, col, size = *rng.integers(2, 10, 2), int(rng.integers(4, 7))
            if label == 0:
                image[row + size // 2, col:col + size] = 255
            elif label == 1:
                image[row:row + size, col + size // 2] = 255
            elif label == 2:
                image[row:row + size, col:col + size] = 255
            else:
                image[row:row + size, col:col + size] = 255
                image[row + 1:row + size - 1, col + 1:col + size - 1] = 0
            yield i, {"image": image, "label": label}

    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(16, 16, 1)),
        "label": tfds.features.ClassLabel(names=[s.replace(" ", "_") for s in SHAPES])})
    tfds.dataset_builders.store_as_tfds_dataset(
        name="shapes16", version="1.0.0", features=features, data_dir=data_dir,
        split_datasets={"train": list(examples(train_examples, 0)),
                        "validation": list(examples(val_examples, 1))},
        description="Synthetic 16x16 images of four shapes (keras_dp example).",
        file_format="tfrecord", download_config=tfds.download.DownloadConfig(num_shards=shards))


def load_builder(name, data_dir, ctx, wait_s=300.0):
    """The tfds builder of `name` in `data_dir`; the chief writes shapes16 first if needed.

    The other workers wait up to `wait_s` seconds for the chief's copy, which
    they see when `data_dir` is on this machine or a shared filesystem.
    """
    import time

    import tensorflow_datasets as tfds

    path = os.path.join(data_dir, "shapes16", "1.0.0", "dataset_info.json")
    if name == "shapes16" and not os.path.exists(path):
        if ctx.is_chief:
            write_shapes16(data_dir)
        deadline = time.monotonic() + wait_s
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"worker {ctx.worker_index}: the chief's shapes16 dataset did not appear "
                    f"in {data_dir} within {wait_s:.0f} s. Put --data-dir on a filesystem "
                    f"every worker sees, or run this example once in one process to write "
                    f"it and copy the folder to every machine. Received: --data-dir={data_dir}")
            time.sleep(0.5)
    return tfds.builder(name, data_dir=data_dir)


def read_split(builder, split, input_context, *, training, seed=0):
    """This input pipeline's share of `split`: `(image, label)` pairs, one pass."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    pipelines = input_context.num_input_pipelines
    if builder.info.splits[split].num_shards >= pipelines:
        # tfds gives each input pipeline (worker) its own subset of the files.
        read_config = tfds.ReadConfig(input_context=input_context, shuffle_seed=seed)
        ds = builder.as_dataset(split=split, shuffle_files=training, read_config=read_config)
    else:
        # Fewer files than workers: every worker reads all and keeps its share.
        ds = builder.as_dataset(split=split, shuffle_files=False)
        ds = ds.shard(pipelines, input_context.input_pipeline_id)
    return ds.map(lambda example: (example["image"], example["label"]),
                  num_parallel_calls=tf.data.AUTOTUNE)


def make_dataset(builder, split, global_batch, *, training, seed=0):
    """A distributed dataset of `split`: every worker builds its own pipeline."""
    import tensorflow as tf

    def dataset_fn(input_context):
        ds = read_split(builder, split, input_context, training=training, seed=seed)
        if training:
            ds = ds.shuffle(4096, seed=seed)
        # repeat(): fit's steps_per_epoch decides the epoch, and every worker
        # has a batch for every step even when their shares differ in size.
        per_replica = input_context.get_per_replica_batch_size(global_batch)
        return ds.repeat().batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    return keras_dp.data.distribute(dataset_fn, global_batch_size=global_batch)


# -- the model: any Keras model --------------------------------------------------------
def build_model(image_shape, num_classes):
    import keras

    inputs = keras.Input(image_shape)
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for filters in (16, 32):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="classifier")


def main(argv=None):
    args = parse_args(argv)
    ctx = keras_dp.scope()  # first: a multi-worker strategy must exist before TF runs
    import keras

    keras.utils.set_random_seed(0)
    global_batch = ctx.global_batch(args.batch_size)
    builder = load_builder(args.dataset, args.data_dir, ctx)
    info = builder.info
    train = make_dataset(builder, "train", global_batch, training=True)
    val_split = "validation" if "validation" in info.splits else "test"
    val = make_dataset(builder, val_split, global_batch, training=False)
    steps = args.steps_per_epoch or keras_dp.data.steps_per_epoch(
        info.splits["train"].num_examples, global_batch)
    val_steps = keras_dp.data.steps_per_epoch(info.splits[val_split].num_examples, global_batch)
    print(f"worker {ctx.worker_index} of {ctx.num_workers}: {ctx.num_replicas} replica(s) in "
          f"all, global batch {global_batch} ({args.batch_size} per replica); reading "
          f"{_my_files(info, ctx)} of the {info.splits['train'].num_shards} "
          f"{args.dataset} train files", flush=True)

    with ctx:  # variables created here are mirrored on every replica
        model = build_model(info.features["image"].shape, info.features["label"].num_classes)
        learning_rate = keras_dp.schedules.scaled_learning_rate(args.learning_rate,
                                                                global_batch, base_batch=32)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], jit_compile=not args.no_xla)

    out = args.output_dir
    if ctx.is_chief:
        os.makedirs(out, exist_ok=True)  # CSVLogger, like Keras', does not create it
    callbacks = [
        # Every worker saves (TF needs them all), only the chief writes here;
        # rerun the same command after a crash and fit resumes at the step.
        keras_dp.callbacks.BackupAndRestore(os.path.join(out, "backup"),
                                            save_freq=max(1, steps // 2)),
        keras_dp.callbacks.ModelCheckpoint(os.path.join(out, "model.keras")),
        keras_dp.callbacks.Throughput(global_batch, num_replicas=ctx.num_replicas),
        keras_dp.callbacks.CSVLogger(os.path.join(out, "log.csv")),  # after Throughput
    ]
    history = model.fit(train, epochs=args.epochs, steps_per_epoch=steps,
                        validation_data=val, validation_steps=val_steps, callbacks=callbacks,
                        verbose=2 if ctx.is_chief else 0)
    final = {k: v[-1] for k, v in history.history.items()}
    if ctx.is_chief:
        print(f"final: loss {final['loss']:.4f}, accuracy {final['accuracy']:.3f}, "
              f"val_accuracy {final['val_accuracy']:.3f}, "
              f"{final.get('examples_per_sec', float('nan')):,.0f} examples/s; saved "
              f"{os.path.join(out, 'model.keras')} and log.csv", flush=True)
    return 0


def _my_files(info, ctx):
    """How many train files this worker reads (tfds deals them out: i, i + N, ...)."""
    files, workers = info.splits["train"].num_shards, ctx.num_workers
    if files < workers:
        return "a share of all"
    return len(range(ctx.worker_index, files, workers))


if __name__ == "__main__":
    sys.exit(main())
