"""examples/train_lm.py written by hand with tf.distribute: what keras_dp saves you.

The same job as examples/train_lm.py (same model, optimizer, schedule, steps,
validation, chief-only saving, sample) with the distribution done by hand on
TensorFlow 2.20-2.21 + Keras 3.10-3.15: reading TF_CONFIG, choosing the strategy,
working around the two Keras 3 bugs that crash `model.fit` under
MultiWorkerMirroredStrategy, a per-worker input pipeline, and making every
worker save while only the chief keeps the file. The model class and the
learning-rate schedule are imported from keras_dp on purpose: they are not
distribution code, and both scripts must train the same thing.

It runs alone and under `keras-dp launch -n 2` (which sets TF_CONFIG), and is
tested like the keras_dp version (tests/test_examples.py), so the comparison
in the README is between two working programs. It still lacks what keras_dp
adds on top: SLURM / MPI / Kubernetes / explicit-variable clusters (only
TF_CONFIG here), GPU splitting between tasks of a node, logical CPU replicas,
TPUs, batches that do not depend on the number of workers, checkpoints on
every epoch, dead-peer and start-up time limits, preemption, and errors
that say what to do.
"""

import argparse
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

parser = argparse.ArgumentParser(description="Train the tiny Transformer LM data-parallel.")
parser.add_argument("--steps", type=int, default=600, help="optimizer steps (default 600)")
parser.add_argument("--batch-size", type=int, default=32, help="sequences per replica")
parser.add_argument("--seq-len", type=int, default=128)
parser.add_argument("--output-dir", default="train_lm_output")
parser.add_argument("--no-xla", action="store_true", help="skip XLA (quicker start, slower steps)")
args = parser.parse_args()
epochs = max(e for e in range(1, 6) if args.steps % e == 0)  # validate after each epoch

# 1. The cluster: TF_CONFIG only (SLURM, MPI, Kubernetes would each need their own code).
tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
workers = tf_config.get("cluster", {}).get("worker", [])
task = tf_config.get("task", {"type": "worker", "index": 0})
is_chief = task["type"] == "chief" or (task["type"] == "worker" and task["index"] == 0
                                       and "chief" not in tf_config.get("cluster", {}))

# 2. The strategy, created before any other TensorFlow op.
gpus = tf.config.list_physical_devices("GPU")
if len(workers) > 1:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
elif len(gpus) > 1:
    strategy = tf.distribute.MirroredStrategy()
elif gpus:
    strategy = tf.distribute.OneDeviceStrategy("/gpu:0")
else:
    strategy = tf.distribute.get_strategy()

import keras  # noqa: E402  (after the strategy: collectives must be configured first)
from keras.src import tree  # noqa: E402
from keras.src.backend.tensorflow import trainer as tf_trainer  # noqa: E402

from keras_dp.models import TransformerLM  # noqa: E402  (the same model as train_lm.py)
from keras_dp.schedules import WarmupSchedule  # noqa: E402

# 3. Keras 3 crashes in fit under MultiWorkerMirroredStrategy (keras-team/keras#20585):
#    its symbolic build all-reduces a whole batch, its metric mean uses axis=0 on scalars.
if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    original_reduce = tf_trainer.reduce_per_replica

    def symbolic_build(self, iterator=None, data_batch=None):
        for *_, it in iterator or ():  # (begin, end, it) since Keras 3.11, (step, it) before
            data_batch = tree.map_structure(
                lambda x: strategy.experimental_local_results(x)[0], next(it))
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values, strategy_, reduction):
        if reduction in ("auto", "mean"):
            return tree.map_structure(lambda v: strategy_.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy_, reduction)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica

keras.utils.set_random_seed(0)  # the same initial weights in every run

# 4. The data: bytes of Python's documentation topics, one input pipeline per worker.
import pydoc_data.topics  # noqa: E402

text = "\n\n".join(pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics))
tokens = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)
cut = int(len(tokens) * 0.9)
batch = args.batch_size * strategy.num_replicas_in_sync


def make_dataset(split_tokens, shuffle):
    count = (len(split_tokens) - 1) // args.seq_len
    windows = np.stack([split_tokens[i * args.seq_len:(i + 1) * args.seq_len + 1]
                        for i in range(count)])

    def dataset_fn(input_context):
        ds = tf.data.Dataset.from_tensor_slices(windows)
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        if shuffle:
            ds = ds.shuffle(len(windows), seed=0)
        ds = ds.repeat().batch(input_context.get_per_replica_batch_size(batch),
                               drop_remainder=True)
        ds = ds.map(lambda w: (w[:, :-1], w[:, 1:]))
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.OFF  # already sharded above
        return ds.with_options(options)

    return strategy.distribute_datasets_from_function(dataset_fn)


train, val = make_dataset(tokens[:cut], True), make_dataset(tokens[cut:], False)

with strategy.scope():
    model = TransformerLM.from_preset("tiny", seq_len=args.seq_len)
    schedule = WarmupSchedule(5e-3 * batch / 32, warmup_steps=min(60, args.steps // 10),
                              decay_steps=args.steps)
    model.compile(optimizer=keras.optimizers.AdamW(schedule), jit_compile=not args.no_xla)
history = model.fit(train, epochs=epochs, steps_per_epoch=args.steps // epochs,
                    validation_data=val, validation_steps=10, verbose=2 if is_chief else 0)

# 5. Every worker saves (reading variables may need the others); only the chief keeps it.
target = args.output_dir if is_chief else tempfile.mkdtemp()
os.makedirs(target, exist_ok=True)
model.save(os.path.join(target, "model.keras"))
if not is_chief:
    shutil.rmtree(target)

if is_chief:
    print(f"{strategy.num_replicas_in_sync} replica(s), {max(1, len(workers))} worker(s); "
          f"global batch {batch}")
    print(f"final loss {history.history['loss'][-1]:.6f}, "
          f"validation loss {history.history['val_loss'][-1]:.6f} nats/byte")
    print("The " + model.generate("The ", 200, temperature=0.8, top_k=40, seed=0))
