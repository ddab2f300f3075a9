# compat corpus program: "Writing a training loop from scratch in TensorFlow"
# (the end-to-end MNIST loop with metrics and `tf.function` train/test steps).
#
# Modelled on: keras-team/keras-io, guides/writing_a_custom_training_loop_in_tensorflow.py,
#   commit 1806537c4333fbff1f9fd038b78179beeda480fb (Apache License 2.0). Written for
#   keras_dp in that program's shape: a functional MLP, Adam, a shuffled `tf.data`
#   pipeline, `tf.GradientTape` + `optimizer.apply(grads, model.trainable_weights)` in a
#   `@tf.function` train_step, accuracy metrics updated per batch, reset per epoch.
# The guide has no strategy: it trains on one device. A hand-written loop cannot be
# made data-parallel by one line, so this program makes the changes tf.distribute's
# own guide for custom loops asks for, and nothing else:
#   1. `import keras_dp` is the first import.
#   2. strategy line (added): `strategy = keras_dp.scope().strategy`; the model,
#      optimizer and metrics are created under `with strategy.scope():`.
#   3. the loss is per example (`reduction=None`) and scaled by the global batch
#      (`tf.nn.compute_average_loss(..., global_batch_size=batch_size)`), since each
#      replica sees only part of the batch and the replicas' gradients are summed.
#   4. both datasets go through `strategy.experimental_distribute_dataset`, and the
#      steps run on every replica through `strategy.run` (distributed_train_step /
#      distributed_test_step); the loss printed is the replicas' sum.
#   5. data source (offline): `keras.datasets.mnist.load_data()` ->
#      `offline_data.mnist_load_data()`, same shapes and dtypes, 1024 + 256 examples;
#      256 validation examples instead of 10000.
# No Keras 2 API to port (the guide already uses `optimizer.apply`).
import keras_dp  # compat: the strategy comes from keras_dp

import time
import os

# The TensorFlow backend is required for tf.GradientTape.
os.environ["KERAS_BACKEND"] = "tensorflow"

import tensorflow as tf
import keras
import numpy as np

import offline_data


def get_model():
    inputs = keras.Input(shape=(784,), name="digits")
    x1 = keras.layers.Dense(64, activation="relu")(inputs)
    x2 = keras.layers.Dense(64, activation="relu")(x1)
    outputs = keras.layers.Dense(10, name="predictions")(x2)
    model = keras.Model(inputs=inputs, outputs=outputs)
    return model


strategy = keras_dp.scope().strategy  # compat: added (the guide trains on one device)

with strategy.scope():  # compat: variables created under the strategy's scope
    model = get_model()
    optimizer = keras.optimizers.Adam(learning_rate=1e-3)
    train_acc_metric = keras.metrics.SparseCategoricalAccuracy()
    val_acc_metric = keras.metrics.SparseCategoricalAccuracy()
# compat: per-example losses (was the default mean over the local batch)
loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

# The training and validation data.
batch_size = 32
# compat: offline data, same shapes and dtypes as keras.datasets.mnist.load_data()
(x_train, y_train), (x_test, y_test) = offline_data.mnist_load_data()
x_train = np.reshape(x_train, (-1, 784))
x_test = np.reshape(x_test, (-1, 784))

# Hold out the last examples for validation.
x_val = x_train[-256:]  # compat: fewer steps (the guide: 10000)
y_val = y_train[-256:]
x_train = x_train[:-256]
y_train = y_train[:-256]

train_dataset = tf.data.Dataset.from_tensor_slices((x_train, y_train))
train_dataset = train_dataset.shuffle(buffer_size=1024).batch(batch_size)

val_dataset = tf.data.Dataset.from_tensor_slices((x_val, y_val))
val_dataset = val_dataset.batch(batch_size)

# compat: every replica reads its part of each global batch
train_dataset = strategy.experimental_distribute_dataset(train_dataset)
val_dataset = strategy.experimental_distribute_dataset(val_dataset)


@tf.function
def train_step(x, y):
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        # compat: scaled by the global batch
        loss_value = tf.nn.compute_average_loss(loss_fn(y, logits),
                                                global_batch_size=batch_size)
    grads = tape.gradient(loss_value, model.trainable_weights)
    optimizer.apply(grads, model.trainable_weights)
    train_acc_metric.update_state(y, logits)
    return loss_value


@tf.function
def test_step(x, y):
    val_logits = model(x, training=False)
    val_acc_metric.update_state(y, val_logits)


@tf.function
def distributed_train_step(x, y):  # compat: the step on every replica
    per_replica_losses = strategy.run(train_step, args=(x, y))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica_losses, axis=None)


@tf.function
def distributed_test_step(x, y):  # compat: the step on every replica
    strategy.run(test_step, args=(x, y))


epochs = 2
for epoch in range(epochs):
    print(f"\nStart of epoch {epoch}")
    start_time = time.time()

    # One pass over the training batches.
    for step, (x_batch_train, y_batch_train) in enumerate(train_dataset):
        loss_value = distributed_train_step(x_batch_train, y_batch_train)  # compat

        # A line every 100 batches.
        if step % 100 == 0:
            print(
                f"Training loss (for 1 batch) at step {step}: {float(loss_value):.4f}"
            )
            print(f"Seen so far: {(step + 1) * batch_size} samples")

    # The epoch's training accuracy, then a fresh start for the next epoch.
    train_acc = train_acc_metric.result()
    print(f"Training acc over epoch: {float(train_acc):.4f}")
    train_acc_metric.reset_state()

    # Validation after every epoch.
    for x_batch_val, y_batch_val in val_dataset:
        distributed_test_step(x_batch_val, y_batch_val)  # compat

    val_acc = val_acc_metric.result()
    val_acc_metric.reset_state()
    print(f"Validation acc: {float(val_acc):.4f}")
    print(f"Time taken: {time.time() - start_time:.2f}s")
