# compat corpus program: "Multi-worker training with Keras", the BackupAndRestore
# section (fault tolerance: `tf.keras.callbacks.BackupAndRestore` on a shared folder).
#
# Modelled on: tensorflow/docs, site/en/tutorials/distribute/multi_worker_with_keras.ipynb
#   (main.py's set-up, then the "BackupAndRestore callback" cell), commit
#   7c3650212740204359d4ceae481abc79345541be (Apache License 2.0). Written for keras_dp
#   in that program's shape: every worker passes the same `backup_dir` to the stock
#   Keras callback, exactly as the tutorial's cell does.
# Differences from the public program:
#   1. `import keras_dp` is the first import.
#   2. strategy line: `tf.distribute.MultiWorkerMirroredStrategy()` ->
#      `keras_dp.scope().strategy`.
#   3. step counts: `fit(..., epochs=2, steps_per_epoch=5)` (the tutorial: 3 and 70).
#   4. backup_dir '/tmp/backup' -> './backup' (relative, in the working directory).
#   5. the BackupAndRestore cell follows main.py's set-up in one file (the tutorial
#      runs it in the notebook).
# No Keras 2 API to port.
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

# The training state is backed up at the end of every epoch (save_freq='epoch').
callbacks = [tf.keras.callbacks.BackupAndRestore(backup_dir='./backup')]  # compat: path
with strategy.scope():
  multi_worker_model = mnist_setup.build_and_compile_cnn_model()
multi_worker_model.fit(multi_worker_dataset,
                       epochs=2,
                       steps_per_epoch=5,  # compat: steps (the tutorial: 3 and 70)
                       callbacks=callbacks)
