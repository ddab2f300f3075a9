"""Keras-layer part `metric_reduction`: metrics reduce across workers.
See docs/keras_layer.md."""

from keras_dp.keras_fix._part import Part, Target, replace, trainer

PART = Part(
    "metric_reduction", "model.fit fails under MultiWorkerMirroredStrategy",
    "https://github.com/keras-team/keras/issues/20585", "multi-worker strategies",
    targets=(Target(trainer, "reduce_per_replica", ("values", "strategy", "reduction")),
             Target(trainer, "_collective_all_reduce_multi_worker")))


def install() -> None:
    from keras.src import tree

    module = trainer()
    original = module.reduce_per_replica
    multi_worker = module._collective_all_reduce_multi_worker

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    replace(PART.name, module, "reduce_per_replica", reduce_per_replica)
