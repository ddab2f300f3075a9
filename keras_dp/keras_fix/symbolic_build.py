"""Keras-layer part `symbolic_build`: `model.fit` under MultiWorkerMirroredStrategy builds.
See docs/keras_layer.md."""

from keras_dp.keras_fix._part import Part, Target, tf_trainer, trainer, wrap

PART = Part(
    "symbolic_build", "model.fit fails under MultiWorkerMirroredStrategy",
    "https://github.com/keras-team/keras/issues/20585", "multi-worker strategies",
    targets=(Target(tf_trainer, "_maybe_symbolic_build", ("self", "iterator", "data_batch")),
             Target(trainer, "_collective_all_reduce_multi_worker")))


def install() -> None:
    import tensorflow as tf
    from keras.src import tree

    multi_worker = trainer()._collective_all_reduce_multi_worker

    def _maybe_symbolic_build(self, keras, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None or not multi_worker(strategy):
            return keras(iterator=iterator, data_batch=data_batch)
        if iterator is not None:
            # Keras yields (begin, end, iterator) since 3.11, (step, iterator) before.
            for *_, it in iterator:
                data_batch = tree.map_structure(
                    lambda x: (strategy.experimental_local_results(x)[0]
                               if isinstance(x, tf.distribute.DistributedValues) else x),
                    next(it))
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    wrap(PART.name, tf_trainer(), "_maybe_symbolic_build", _maybe_symbolic_build)
