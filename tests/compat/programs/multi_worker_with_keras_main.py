# compat corpus program: `main.py` of "Multi-worker training with Keras", with the
# tutorial's "Model saving and loading" cells (the chief-or-temp `write_filepath`).
#
# Modelled on: tensorflow/docs, site/en/tutorials/distribute/multi_worker_with_keras.ipynb
#   (the `%%writefile main.py` cell, then the model-saving cells), commit
#   7c3650212740204359d4ceae481abc79345541be (Apache License 2.0). Written for keras_dp
#   in that program's shape: each worker reads its own TF_CONFIG (set by whoever starts
#   it: the tutorial sets it by hand per worker), creates the strategy, builds the
#   dataset, builds the model in the scope, fits, then saves through `write_filepath`
#   (the chief writes the real path, the others a `workertemp_<id>` folder they remove).
# Differences from the public program:
#   1. `import keras_dp` is the first import.
#   2. strategy line: `tf.distribute.MultiWorkerMirroredStrategy()` ->
#      `keras_dp.scope().strategy`.
#   3. step counts: `fit(..., epochs=2, steps_per_epoch=5)` (the tutorial: 3 and 70).
#   4. Keras 3 port (the Keras 3 migration guide: `model.save()` writes a `.keras`
#      file; a SavedModel folder is `model.export()`): model_path '/tmp/keras-model'
#      -> './keras-model.keras' (relative, in the working directory).
#   5. the saving cells follow main.py's fit in the same file (the tutorial runs them
#      in the notebook); the tutorial's reload-and-fit cell is left to the test.
import keras_dp  # compat: the strategy comes from keras_dp

import os
import json

import tensorflow as tf
import mnist_setup

per_worker_batch_size = 64
tf_config = json.loads(os.environ['TF_CONFIG'])
num_workers = len(tf_config['cluster']['worker'])

strategy = keras_dp.scope().strategy  # compat: was tf.distribute.MultiWorkerMirroredStrategy()

global_batch_size = per_worker_batch_size * num_workers
multi_worker_dataset = mnist_setup.mnist_dataset(global_batch_size)

with strategy.scope():
  # The model's variables are created under the strategy's scope.
  multi_worker_model = mnist_setup.build_and_compile_cnn_model()


multi_worker_model.fit(multi_worker_dataset, epochs=2, steps_per_epoch=5)  # compat: steps

# -- saving: the chief writes model_path, every other worker a temporary copy --
model_path = './keras-model.keras'  # compat: Keras 3 (was '/tmp/keras-model')


def _is_chief(task_type, task_id):
  # Worker 0 is the chief when the cluster has no 'chief' task; task_type None
  # means a single worker without TF_CONFIG.
  return (task_type == 'worker' and task_id == 0) or task_type is None


def _get_temp_dir(dirpath, task_id):
  base_dirpath = 'workertemp_' + str(task_id)
  temp_dir = os.path.join(dirpath, base_dirpath)
  tf.io.gfile.makedirs(temp_dir)
  return temp_dir


def write_filepath(filepath, task_type, task_id):
  dirpath = os.path.dirname(filepath)
  base = os.path.basename(filepath)
  if not _is_chief(task_type, task_id):
    dirpath = _get_temp_dir(dirpath, task_id)
  return os.path.join(dirpath, base)


task_type, task_id = (strategy.cluster_resolver.task_type,
                      strategy.cluster_resolver.task_id)
write_model_path = write_filepath(model_path, task_type, task_id)

multi_worker_model.save(write_model_path)

if not _is_chief(task_type, task_id):
  tf.io.gfile.rmtree(os.path.dirname(write_model_path))
