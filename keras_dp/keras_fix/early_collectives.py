"""Keras-layer part `early_collectives`: tensors and datasets made before `keras_dp.scope()`
(set up by `keras_dp.early`). See docs/keras_layer.md."""

from keras_dp.keras_fix._part import Part, Target, lazy

_context = lazy("tensorflow.python.eager.context", "Context")

PART = Part(
    "early_collectives",
    "a multi-worker program that makes a tensor or dataset before keras_dp.scope() cannot "
    "get its strategy",
    "TensorFlow's TODO(b/129298253) in Context.enable_collective_ops",
    "multi-worker environments, when TensorFlow is imported",
    targets=(Target(_context, "configure_collective_ops", ("self", "collective_leader")),
             Target(_context, "enable_collective_ops", ("self", "server_def")),
             Target(_context, "ensure_initialized", ("self",))))
