# compat corpus program: "Multi-GPU distributed training with TensorFlow", part 2
# ("Using callbacks to ensure fault tolerance": the make_or_restore_model loop).
#
# Modelled on: keras-team/keras-io, guides/distributed_training_with_tensorflow.py,
#   commit 1806537c4333fbff1f9fd038b78179beeda480fb (Apache License 2.0).
#   Written for keras_dp in that program's shape: the datasets exist before the
#   strategy (in the guide they are module-level names left by part 1), and each
#   run_training() call creates the strategy, restores the newest ./ckpt/*.keras
#   (or builds a new model) and fits with a per-epoch ModelCheckpoint, twice.
# Differences from the public program:
#   1. `import keras_dp` is the first import.
#   2. strategy line (in run_training): `tf.distribute.MirroredStrategy()` ->
#      `keras_dp.scope().strategy`.
#   3. part 1's get_compiled_model()/get_dataset() and its module-level
#      `train_dataset, val_dataset, test_dataset = get_dataset()` come first, since
#      this file is part 2 on its own.
#   4. data source (offline): `keras.datasets.mnist.load_data()` ->
#      `offline_data.mnist_load_data()`, same shapes and dtypes, 1024 + 256 examples;
#      256 validation examples instead of 10000.
#   5. `os.makedirs(checkpoint_dir, exist_ok=True)` without the guide's
#      `if not os.path.exists(...)`: on one machine the workers share ./ckpt, and the
#      guide's check-then-create races between them (one worker, rarely, gets
#      FileExistsError); docs/dropin_writes.md, "What a program must still do itself".
# No Keras 2 API to port (the guide already saves `.keras` files).
import keras_dp  # compat: the strategy comes from keras_dp

import os

os.environ["KERAS_BACKEND"] = "tensorflow"

import tensorflow as tf
import keras

import offline_data


def get_compiled_model():
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
    x_train = x_train.reshape(-1, 784).astype("float32") / 255
    x_test = x_test.reshape(-1, 784).astype("float32") / 255
    y_train = y_train.astype("float32")
    y_test = y_test.astype("float32")
    x_val = x_train[-num_val_samples:]
    y_val = y_train[-num_val_samples:]
    x_train = x_train[:-num_val_samples]
    y_train = y_train[:-num_val_samples]
    return (
        tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(batch_size),
        tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(batch_size),
        tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(batch_size),
    )


# Module-level datasets, made before any strategy exists (as in the guide).
train_dataset, val_dataset, test_dataset = get_dataset()

# One folder for the checkpoints.
checkpoint_dir = "./ckpt"
os.makedirs(checkpoint_dir, exist_ok=True)  # compat: was `if not exists: makedirs` (a race)


def make_or_restore_model():
    # The newest checkpoint if there is one, else a new model.
    checkpoints = [checkpoint_dir + "/" + name for name in os.listdir(checkpoint_dir)]
    if checkpoints:
        latest_checkpoint = max(checkpoints, key=os.path.getctime)
        print("Restoring from", latest_checkpoint)
        return keras.models.load_model(latest_checkpoint)
    print("Creating a new model")
    return get_compiled_model()


def run_training(epochs=1):
    strategy = keras_dp.scope().strategy  # compat: was tf.distribute.MirroredStrategy()

    with strategy.scope():
        model = make_or_restore_model()

        callbacks = [
            # A full model file per epoch, the epoch in its name.
            keras.callbacks.ModelCheckpoint(
                filepath=checkpoint_dir + "/ckpt-{epoch}.keras",
                save_freq="epoch",
            )
        ]
        model.fit(
            train_dataset,
            epochs=epochs,
            callbacks=callbacks,
            validation_data=val_dataset,
            verbose=2,
        )


# The first call builds the model ...
run_training(epochs=1)

# ... the second resumes from the checkpoint the first one wrote.
run_training(epochs=1)
