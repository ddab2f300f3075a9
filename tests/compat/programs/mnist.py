# compat corpus module: `mnist.py` of "Custom training loop with Keras and
# MultiWorkerMirroredStrategy".
#
# Modelled on: tensorflow/docs, site/en/tutorials/distribute/multi_worker_with_ctl.ipynb
#   (the `%%writefile mnist.py` cell), commit 7c3650212740204359d4ceae481abc79345541be
#   (Apache License 2.0). Written for keras_dp in that module's shape: a shuffled MNIST
#   dataset, a `dataset_fn(global_batch_size, input_context)` that shards by input
#   pipeline and batches by the per-replica size, and an L2-regularised small CNN.
# Differences from the public module:
#   1. data source (offline): `tf.keras.datasets.mnist.load_data()` ->
#      `offline_data.mnist_load_data()`, same shapes and dtypes, 1024 examples.
# No Keras 2 API to port.

import os
import tensorflow as tf
import numpy as np

import offline_data


def mnist_dataset(batch_size):
  # compat: offline data, same shapes and dtypes as tf.keras.datasets.mnist.load_data()
  (x_train, y_train), _ = offline_data.mnist_load_data()
  # uint8 pixels in [0, 255] -> float32 in [0, 1]; int64 labels.
  x_train = x_train / np.float32(255)
  y_train = y_train.astype(np.int64)
  train_dataset = tf.data.Dataset.from_tensor_slices(
      (x_train, y_train)).shuffle(60000)
  return train_dataset


def dataset_fn(global_batch_size, input_context):
  batch_size = input_context.get_per_replica_batch_size(global_batch_size)
  dataset = mnist_dataset(batch_size)
  dataset = dataset.shard(input_context.num_input_pipelines,
                          input_context.input_pipeline_id)
  dataset = dataset.batch(batch_size)
  return dataset


def build_cnn_model():
  regularizer = tf.keras.regularizers.L2(1e-5)
  return tf.keras.Sequential([
      tf.keras.Input(shape=(28, 28)),
      tf.keras.layers.Reshape(target_shape=(28, 28, 1)),
      tf.keras.layers.Conv2D(32, 3,
                             activation='relu',
                             kernel_regularizer=regularizer),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(128,
                            activation='relu',
                            kernel_regularizer=regularizer),
      tf.keras.layers.Dense(10, kernel_regularizer=regularizer)
  ])
