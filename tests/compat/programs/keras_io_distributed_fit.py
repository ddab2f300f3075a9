# compat corpus program: "Multi-GPU distributed training with TensorFlow", part 1
# (single-host synchronous training: fit with validation, then evaluate).
#
# Modelled on: keras-team/keras-io, guides/distributed_training_with_tensorflow.py,
#   commit 1806537c4333fbff1f9fd038b78179beeda480fb (Apache License 2.0).
#   Written for keras_dp in that program's shape: the same Keras and tf.data calls
#   in the same order (model built and compiled, datasets made and fit with
#   validation, then evaluate, all inside the strategy's scope).
# Differences from the public program:
#   1. `import keras_dp` is the first import.
#   2. strategy line: `tf.distribute.MirroredStrategy()` -> `keras_dp.scope().strategy`.
#   3. data source (offline): `keras.datasets.mnist.load_data()` ->
#      `offline_data.mnist_load_data()`, same shapes and dtypes, 1024 + 256 examples.
#   4. step counts: 256 validation examples instead of 10000 (the guide reserves
#      10000 of MNIST's 60000); epochs stay 2.
# No Keras 2 API to port.
import keras_dp  # compat: the strategy comes from keras_dp

import os

os.environ["KERAS_BACKEND"] = "tensorflow"

import tensorflow as tf
import keras

import offline_data


def get_compiled_model():
    # A small densely-connected classifier: two hidden layers of 256.
    inputs = keras.Input(shape=(784,))
    x = keras.layers.Dense(256, activation="relu")(inputs)
    x = keras.layers.Dense(256, activation="relu")(x)
    outputs = keras.layers.Dense(10)(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    return model


def get_dataset():
    batch_size = 32
    num_val_samples = 256  # compat: fewer steps (the guide: 10000)

    # compat: offline data, same shapes and dtypes as keras.datasets.mnist.load_data()
    (x_train, y_train), (x_test, y_test) = offline_data.mnist_load_data()

    # Flatten the images and scale them to [0, 1].
    x_train = x_train.reshape(-1, 784).astype("float32") / 255
    x_test = x_test.reshape(-1, 784).astype("float32") / 255
    y_train = y_train.astype("float32")
    y_test = y_test.astype("float32")

    # The last num_val_samples training examples are held out for validation.
    x_val = x_train[-num_val_samples:]
    y_val = y_train[-num_val_samples:]
    x_train = x_train[:-num_val_samples]
    y_train = y_train[:-num_val_samples]
    return (
        tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(batch_size),
        tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(batch_size),
        tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(batch_size),
    )


strategy = keras_dp.scope().strategy  # compat: was tf.distribute.MirroredStrategy()
print("Number of devices: {}".format(strategy.num_replicas_in_sync))

with strategy.scope():
    # Variables (model, optimizer, metrics) are created under the scope.
    model = get_compiled_model()

    # Train on every replica, with validation after each epoch.
    train_dataset, val_dataset, test_dataset = get_dataset()
    model.fit(train_dataset, epochs=2, validation_data=val_dataset)

    # Evaluate on every replica.
    model.evaluate(test_dataset)
