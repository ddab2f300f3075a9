# compat corpus module: `mnist_setup.py` of "Multi-worker training with Keras".
#
# Modelled on: tensorflow/docs, site/en/tutorials/distribute/multi_worker_with_keras.ipynb
#   (the `%%writefile mnist_setup.py` cell), commit 7c3650212740204359d4ceae481abc79345541be
#   (Apache License 2.0). Written for keras_dp in that module's shape: a repeating,
#   shuffled MNIST `tf.data` pipeline batched by the caller, and a small CNN compiled
#   with SGD.
# Differences from the public module:
#   1. data source (offline): `tf.keras.datasets.mnist.load_data()` ->
#      `offline_data.mnist_load_data()`, same shapes and dtypes, 1024 examples.
# No Keras 2 API to port (`InputLayer(input_shape=...)` still works in Keras 3, with
# a deprecation warning, so it stays as the tutorial wrote it).

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
      (x_train, y_train)).shuffle(60000).repeat().batch(batch_size)
  return train_dataset


def build_and_compile_cnn_model():
  model = tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=(28, 28)),
      tf.keras.layers.Reshape(target_shape=(28, 28, 1)),
      tf.keras.layers.Conv2D(32, 3, activation='relu'),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(128, activation='relu'),
      tf.keras.layers.Dense(10)
  ])
  model.compile(
      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      optimizer=tf.keras.optimizers.SGD(learning_rate=0.001),
      metrics=['accuracy'])
  return model
