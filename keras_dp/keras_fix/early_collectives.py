"""Keras-layer part `early_collectives`: tensors and datasets made before `keras_dp.scope()`.

TensorFlow enables multi-worker collective ops only before its runtime
starts, so a program that builds its `tf.data` datasets before creating
`MultiWorkerMirroredStrategy` (as most guides do) cannot get its strategy.
The part configures the collectives when TensorFlow is imported; the set-up
itself is `keras_dp.early` (it runs from `import keras_dp`, before any
strategy exists). Applied in multi-worker environments, when TensorFlow is
imported.
"""

from __future__ import annotations

from keras_dp.keras_fix._part import Part, Target


def _context():
    from tensorflow.python.eager import context

    return context.Context


PART = Part(
    "early_collectives",
    "a multi-worker program that makes a tensor or dataset before keras_dp.scope() cannot "
    "get its strategy",
    "TensorFlow's TODO(b/129298253) in Context.enable_collective_ops",
    "multi-worker environments, when TensorFlow is imported",
    targets=(Target(_context, "configure_collective_ops", ("self", "collective_leader")),
             Target(_context, "enable_collective_ops", ("self", "server_def")),
             Target(_context, "ensure_initialized", ("self",))))
