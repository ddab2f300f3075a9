"""Offline stand-ins for the data sources of the compat corpus' programs.

The public programs download MNIST (`keras.datasets.mnist.load_data()`). CI has
no network, so each program calls `offline_data.mnist_load_data()` instead (one
changed line, marked `# compat: offline data` in the program). It returns what
`keras.datasets.mnist.load_data()` returns — `((x_train, y_train), (x_test,
y_test))`, uint8 images of shape (n, 28, 28) with values 0-255 and uint8 labels
0-9 — only fewer examples, so that a few steps cover an epoch.

The images are learnable (each class is a fixed random pattern plus noise) and
the same in every process: every worker of a multi-worker job builds the same
dataset, as it would from the downloaded file.
"""

import numpy as np

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10


def mnist_load_data(num_train=1024, num_test=256, seed=0):
    """Same structure, shapes and dtypes as `keras.datasets.mnist.load_data()`.

    Args:
        num_train: Training examples (MNIST has 60000).
        num_test: Test examples (MNIST has 10000).
        seed: Seed of the generator; the default gives every process the same data.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: uint8 arrays of shapes
        `(num_train, 28, 28)`, `(num_train,)`, `(num_test, 28, 28)`, `(num_test,)`.
    """
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(0, 255, size=(NUM_CLASSES, *IMAGE_SHAPE))

    def split(count):
        labels = rng.integers(0, NUM_CLASSES, size=count)
        noise = rng.normal(0, 40, size=(count, *IMAGE_SHAPE))
        images = np.clip(patterns[labels] + noise, 0, 255)
        return images.astype(np.uint8), labels.astype(np.uint8)

    return split(num_train), split(num_test)
