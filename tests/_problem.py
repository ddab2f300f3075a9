"""A small, fixed regression problem for exact equivalence tests.

Global batches are fixed: global batch k holds examples [k*B, (k+1)*B), and
global replica r of R gets rows [r*b, (r+1)*b) of it (b = B / R). The input
pipelines are built with `distribute_datasets_from_function`, so this holds
for one device, several local replicas and several workers alike.
"""

import numpy as np

GLOBAL_BATCH = 16
STEPS = 10
FEATURES = 8
LEARNING_RATE = 0.2


def data(steps=STEPS, global_batch=GLOBAL_BATCH):
    rng = np.random.default_rng(1234)
    x = rng.normal(size=(steps * global_batch, FEATURES)).astype("float32")
    w = rng.normal(size=(FEATURES, 1)).astype("float32")
    y = (np.tanh(x @ w) + 0.1 * np.sin(3 * x[:, :1])).astype("float32")
    return x, y


def initial_weights():
    rng = np.random.default_rng(99)
    shapes = [(FEATURES, 16), (16,), (16, 4), (4,), (4, 1), (1,)]
    return [rng.normal(scale=0.5, size=s).astype("float32") for s in shapes]


#: Gradient clipping that bites at every step of this problem (gradient norms ~0.3-1).
CLIPPING = {"clipnorm": 0.1, "global_clipnorm": 0.1, "clipvalue": 0.02}


def build_model(jit_compile=False, metrics=None, **clipping):
    """The model with fixed initial weights, compiled with SGD (`clipping`: its clip options)."""
    import keras

    model = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(16, activation="tanh"),
        keras.layers.Dense(4, activation="tanh"),
        keras.layers.Dense(1),
    ])
    model.set_weights(initial_weights())
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE, **clipping), loss="mse",
                  metrics=metrics, jit_compile=jit_compile)
    return model


def distributed_dataset(strategy, steps=STEPS, global_batch=GLOBAL_BATCH, arrays=None):
    import tensorflow as tf

    x, y = data(steps, global_batch) if arrays is None else arrays
    replicas = strategy.num_replicas_in_sync

    def dataset_fn(ctx):
        per_replica = ctx.get_per_replica_batch_size(global_batch)
        local = replicas // ctx.num_input_pipelines
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(per_replica)
        # Per-replica batch j belongs to global replica j % replicas; keep ours.
        first = ctx.input_pipeline_id * local
        ds = ds.enumerate().filter(
            lambda j, _: tf.logical_and(j % replicas >= first, j % replicas < first + local))
        return ds.map(lambda j, batch: batch)

    return strategy.distribute_datasets_from_function(dataset_fn)


def train(strategy, steps=STEPS, jit_compile=False, **clipping):
    """Trains a fresh model for `steps` steps; returns (model, weights)."""
    with strategy.scope():
        model = build_model(jit_compile, **clipping)
    model.fit(distributed_dataset(strategy, steps), epochs=1, steps_per_epoch=steps,
              verbose=0, shuffle=False)
    return model, [np.array(w) for w in model.get_weights()]


#: Batches of `lm_data()`: (global batch, number of steps).
LM_BATCH, LM_STEPS = 8, 3


def lm_data():
    """Token sequences for `embedding_lm` (inputs, next-token targets)."""
    tokens = np.random.default_rng(5).integers(0, 256, size=(LM_STEPS * LM_BATCH, 17))
    tokens = tokens.astype("int32")
    return tokens[:, :-1], tokens[:, 1:]


def embedding_lm(jit_compile=False, **optimizer):
    """Token + position embeddings (gathered: IndexedSlices gradients), untied head, Adam."""
    import keras

    from keras_dp.models import TransformerLM

    keras.utils.set_random_seed(3)
    model = TransformerLM(vocab_size=256, seq_len=16, d_model=16, num_heads=2, num_layers=1,
                          tie_embeddings=False)
    model.compile(optimizer=keras.optimizers.Adam(5e-3, beta_2=0.99, **optimizer),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    model.build((None, 16))
    return model
