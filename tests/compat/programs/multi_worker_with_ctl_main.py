# compat corpus program: `main.py` of "Custom training loop with Keras and
# MultiWorkerMirroredStrategy".
#
# Modelled on: tensorflow/docs, site/en/tutorials/distribute/multi_worker_with_ctl.ipynb
#   (the `%%writefile main.py` cell), commit 7c3650212740204359d4ceae481abc79345541be
#   (Apache License 2.0). Written for keras_dp in that program's shape: TF_CONFIG read
#   by the program, a `tf.GradientTape` step run by `strategy.run` on a dataset from
#   `distribute_datasets_from_function`, `tf.nn.compute_average_loss` plus the scaled
#   regularisation losses, and a `tf.train.CheckpointManager` per epoch through the
#   chief-or-temp `write_filepath` (restored at start when a checkpoint exists).
# Differences from the public program:
#   1. `import keras_dp` is the first import.
#   2. strategy line: `tf.distribute.MultiWorkerMirroredStrategy()` ->
#      `keras_dp.scope().strategy`.
#   3. step counts: num_epochs = 2, num_steps_per_epoch = 5 (the tutorial: 3 and 70).
#   4. Keras 3 port (Keras 3 has no `keras.losses.Reduction` enum, reductions are
#      strings or None, and metrics have `reset_state()`, not `reset_states()`):
#      `reduction=tf.keras.losses.Reduction.NONE` -> `reduction=None`;
#      `train_accuracy.reset_states()` -> `train_accuracy.reset_state()`.
# The checkpoint folder stays the tutorial's `multiprocessing.util.get_temp_dir()`
# (a per-process temporary folder, removed at exit).
import keras_dp  # compat: the strategy comes from keras_dp

import os
import json
import tensorflow as tf
import mnist
from multiprocessing import util

per_worker_batch_size = 64
tf_config = json.loads(os.environ['TF_CONFIG'])
num_workers = len(tf_config['cluster']['worker'])
global_batch_size = per_worker_batch_size * num_workers

num_epochs = 2  # compat: steps (the tutorial: 3)
num_steps_per_epoch = 5  # compat: steps (the tutorial: 70)


# Saving checkpoints: the chief writes checkpoint_dir, the others a temporary folder.
def _is_chief(task_type, task_id, cluster_spec):
  return (task_type is None
          or task_type == 'chief'
          or (task_type == 'worker'
              and task_id == 0
              and 'chief' not in cluster_spec.as_dict()))


def _get_temp_dir(dirpath, task_id):
  base_dirpath = 'workertemp_' + str(task_id)
  temp_dir = os.path.join(dirpath, base_dirpath)
  tf.io.gfile.makedirs(temp_dir)
  return temp_dir


def write_filepath(filepath, task_type, task_id, cluster_spec):
  dirpath = os.path.dirname(filepath)
  base = os.path.basename(filepath)
  if not _is_chief(task_type, task_id, cluster_spec):
    dirpath = _get_temp_dir(dirpath, task_id)
  return os.path.join(dirpath, base)


checkpoint_dir = os.path.join(util.get_temp_dir(), 'ckpt')

strategy = keras_dp.scope().strategy  # compat: was tf.distribute.MultiWorkerMirroredStrategy()

with strategy.scope():
  # Everything that creates variables is made under the strategy's scope.
  multi_worker_model = mnist.build_cnn_model()

  multi_worker_dataset = strategy.distribute_datasets_from_function(
      lambda input_context: mnist.dataset_fn(global_batch_size, input_context))
  optimizer = tf.keras.optimizers.RMSprop(learning_rate=0.001)
  train_accuracy = tf.keras.metrics.SparseCategoricalAccuracy(
      name='train_accuracy')


@tf.function
def train_step(iterator):
  """One step on every replica; returns the loss summed over replicas."""

  def step_fn(inputs):
    """The step of one replica."""
    x, y = inputs
    with tf.GradientTape() as tape:
      predictions = multi_worker_model(x, training=True)
      per_example_loss = tf.keras.losses.SparseCategoricalCrossentropy(
          from_logits=True,
          reduction=None)(y, predictions)  # compat: Keras 3 (was Reduction.NONE)
      loss = tf.nn.compute_average_loss(per_example_loss)
      model_losses = multi_worker_model.losses
      if model_losses:
        loss += tf.nn.scale_regularization_loss(tf.add_n(model_losses))

    grads = tape.gradient(loss, multi_worker_model.trainable_variables)
    optimizer.apply_gradients(
        zip(grads, multi_worker_model.trainable_variables))
    train_accuracy.update_state(y, predictions)
    return loss

  per_replica_losses = strategy.run(step_fn, args=(next(iterator),))
  return strategy.reduce(
      tf.distribute.ReduceOp.SUM, per_replica_losses, axis=None)


epoch = tf.Variable(
    initial_value=tf.constant(0, dtype=tf.dtypes.int64), name='epoch')
step_in_epoch = tf.Variable(
    initial_value=tf.constant(0, dtype=tf.dtypes.int64),
    name='step_in_epoch')

task_type, task_id, cluster_spec = (strategy.cluster_resolver.task_type,
                                    strategy.cluster_resolver.task_id,
                                    strategy.cluster_resolver.cluster_spec())

checkpoint = tf.train.Checkpoint(
    model=multi_worker_model, epoch=epoch, step_in_epoch=step_in_epoch)

write_checkpoint_dir = write_filepath(checkpoint_dir, task_type, task_id,
                                      cluster_spec)
checkpoint_manager = tf.train.CheckpointManager(
    checkpoint, directory=write_checkpoint_dir, max_to_keep=1)

# Restore the latest checkpoint, if there is one.
latest_checkpoint = tf.train.latest_checkpoint(checkpoint_dir)
if latest_checkpoint:
  checkpoint.restore(latest_checkpoint)

# The training loop, resumable at epoch granularity.
while epoch.numpy() < num_epochs:
  iterator = iter(multi_worker_dataset)
  total_loss = 0.0
  num_batches = 0

  while step_in_epoch.numpy() < num_steps_per_epoch:
    total_loss += train_step(iterator)
    num_batches += 1
    step_in_epoch.assign_add(1)

  train_loss = total_loss / num_batches
  print('Epoch: %d, accuracy: %f, train_loss: %f.'
        % (epoch.numpy(), train_accuracy.result(), train_loss))

  train_accuracy.reset_state()  # compat: Keras 3 (was reset_states())

  checkpoint_manager.save()
  if not _is_chief(task_type, task_id, cluster_spec):
    tf.io.gfile.rmtree(write_checkpoint_dir)

  epoch.assign_add(1)
  step_in_epoch.assign(0)
