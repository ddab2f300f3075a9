"""The main job, `keras-dp train`: train a Transformer LM data-parallel (docs/train_job.md)."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Any, Dict, List, Optional

from keras_dp.train_config import MODEL_FILE, TrainConfig, TrainResult, format_report  # noqa: F401
from keras_dp.train_files import backup_dir_of, backup_point, save


def build_callbacks(config: TrainConfig, context, *, total_steps: int, initial_step: int,
                    global_batch: int, seq_len: int, unit: str,
                    backup_dir: Optional[str] = None, plan: Optional[Dict[str, Any]] = None,
                    history: Optional[Dict[str, List[float]]] = None) -> Dict[str, Any]:
    """The job's callbacks by name, in `fit`'s order (the one place they are made).

    `backup` (with `backup_dir`; each backup records `plan` and the epoch logs, from
    `history` on), `lr`, `throughput`, `stop` (at `total_steps`), `progress`, `history`.
    """
    import keras

    from keras_dp.callbacks import (BackupAndRestore, LearningRateLogger, Progress, Throughput,
                                    is_replayed_step)
    from keras_dp.callbacks.backup import steps_per_batch

    class StopAtStep(keras.callbacks.Callback):
        step = initial_step

        def on_train_batch_end(self, batch, logs=None):
            if is_replayed_step(self.model, batch):
                return  # done before the backup this run resumed from
            self.step += steps_per_batch(self.model)
            if self.step >= total_steps:
                self.model.stop_training = True

    callbacks = {}
    history_callback = keras.callbacks.History()
    history_callback.history = {k: list(v) for k, v in (history or {}).items()}
    if backup_dir:  # kept until the final model is saved; the input starts at the step
        callbacks["backup"] = BackupAndRestore(
            backup_dir, save_freq=config.backup_every, delete_checkpoint=False,
            replay_data=False, keep=config.keep_backups,
            metadata=lambda: {"job": plan, "history": _floats(history_callback.history)})
    callbacks.update({
        "lr": LearningRateLogger(),
        "throughput": Throughput(global_batch, seq_len, context.num_replicas),
        "stop": StopAtStep(),
        "progress": Progress(total_steps, initial_step=initial_step, style=config.progress,
                             bits_per=unit, is_chief=context.is_chief),
        "history": history_callback,
    })
    return callbacks


def build_model(config: TrainConfig, tokenizer):
    """The job's `TransformerLM`, not yet compiled or built (call it in the strategy's scope).

    Args:
        config: Its preset, size overrides and `mixed_precision`.
        tokenizer: The corpus's tokenizer (its `vocab_size` sizes the model).
    """
    from keras_dp.models import TransformerLM

    overrides = {k: getattr(config, k) for k in ("seq_len", "d_model", "num_layers",
                                                 "num_heads", "dropout")
                 if getattr(config, k) is not None}
    if config.mixed_precision:
        overrides["dtype"] = config.mixed_precision
    return TransformerLM.from_preset(config.preset, vocab_size=int(tokenizer.vocab_size),
                                     tokenizer=tokenizer, **overrides)


def compile_model(model, config: TrainConfig, schedule) -> None:
    """Compiles and builds `model` as the job does: AdamW, the LM loss, XLA, steps per execution.

    The optimizer's slots are made here, not in the step's first trace: without a strategy scope
    Keras makes them while tracing, and TensorFlow then traces the whole step a second time.

    Args:
        model: A `TransformerLM` (from `build_model`).
        config: Its `weight_decay`, clipping, `xla` and `steps_per_execution`.
        schedule: The learning rate (a `keras_dp.schedules.WarmupSchedule`).
    """
    import keras

    optimizer = keras.optimizers.AdamW(
        schedule, weight_decay=config.weight_decay, beta_1=0.9, beta_2=0.99,
        clipnorm=config.clipnorm or None, global_clipnorm=config.global_clipnorm or None)
    # Norms, biases and position embeddings are not decayed.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias", "position"])
    model.compile(optimizer=optimizer, jit_compile=bool(config.xla),
                  steps_per_execution=config.steps_per_execution)
    model.build((None, model.seq_len))
    model.optimizer.build(model.trainable_variables)   # a LossScaleOptimizer with mixed_float16


def _say(context, *messages: str) -> None:
    if context.is_chief:
        for message in messages:
            print(f"keras-dp train: {message}", file=sys.stderr)


def _floats(history: Dict[str, List[Any]]) -> Dict[str, List[float]]:
    return {k: [float(v) for v in values] for k, values in history.items()}


def train(config: Optional[TrainConfig] = None, **options) -> TrainResult:
    """Runs the main job (docs/train_job.md).

    Args:
        config: A `TrainConfig` (default: the defaults).
        **options: Fields of `TrainConfig` to override.

    Returns:
        A `TrainResult` on every worker (`output_dir` and `sample` only on the chief).
    """
    config = dataclasses.replace(config or TrainConfig(), **options)
    config.check()
    started = time.time()

    import keras_dp

    context = keras_dp.scope(config.strategy, cpu_replicas=config.cpu_replicas)
    from keras_dp.xla import use_xla

    xla_off = "" if config.xla is False else "; no XLA (several CPU replicas, no replica_xla)"
    config = dataclasses.replace(config, xla=use_xla(config.xla, context.strategy, whole_step=True))
    import keras

    from keras_dp import data as data_lib
    from keras_dp.callbacks import latest_backup
    from keras_dp.models.presets import preset
    from keras_dp.schedules import WarmupSchedule, scaled_learning_rate

    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    corpus = data_lib.load_corpus(config.data, data_dir=config.data_dir,
                                  cache_dir=config.cache_dir, text_feature=config.text_feature)
    unit = "byte" if corpus.tokenizer.kind == "bytes" else "token"
    seq_len = config.seq_len or preset(config.preset)["seq_len"]   # the one preset check
    global_batch = config.global_batch_size or config.batch_size * context.num_replicas
    data_lib.per_replica_batch_size(global_batch, context.num_replicas)
    layout = data_lib.StreamLayout(corpus.num_tokens("train"), global_batch, seq_len)
    total_steps = int(config.steps) if config.steps is not None else TrainConfig.DEFAULT_STEPS \
        if config.epochs is None else max(1, int(round(config.epochs * layout.steps_per_epoch)))
    data_key = {"source": corpus.name, "seq_len": seq_len, "global_batch_size": global_batch,
                "seed": config.seed}
    backup_dir = backup_dir_of(config)
    backed_up = backup_point(backup_dir, data_key, total_steps) if backup_dir else None
    first_step, initial_step = (backed_up["first_step"], backed_up["step"]) if backed_up else (0, 0)
    ignored = None if backup_dir else backup_dir_of(config, enabled=True)
    if ignored and context.is_chief and latest_backup(ignored) is not None:
        _say(context, f"--no-backup: ignoring the backup of an interrupted run in {ignored}")

    peak = scaled_learning_rate(config.learning_rate, global_batch, config.base_batch)
    schedule = WarmupSchedule(peak, min(config.warmup_steps, max(0, total_steps - 1)),
                              total_steps, config.decay, config.min_lr_ratio)
    with context:
        model = build_model(config, corpus.tokenizer)
        compile_model(model, config, schedule)
    # The batches depend only on the step: the input starts where training resumes.
    train_ds = data_lib.text_dataset(corpus, split="train", seq_len=seq_len,
                                     global_batch_size=global_batch, seed=config.seed,
                                     start_step=initial_step, strategy=context.strategy)
    val_ds, val_steps = None, None
    if "validation" in corpus.splits and corpus.num_tokens("validation") >= \
            global_batch * (seq_len + 1):
        val_steps = min(data_lib.StreamLayout(corpus.num_tokens("validation"), global_batch,
                                              seq_len).steps_per_epoch, config.val_steps or 10 ** 9)
        # Repeated: Keras' symbolic build under a strategy takes a batch first.
        val_ds = data_lib.text_dataset(corpus, split="validation", seq_len=seq_len,
                                       global_batch_size=global_batch, shuffle=False,
                                       repeat=True, epoch_steps=val_steps,
                                       strategy=context.strategy)
    else:
        _say(context, "the validation split is too small for this batch; reporting training "
             "loss only")
    # Epochs are validation intervals of `every` steps from `first_step`; a resumed run
    # keeps its plan, so it validates at the same steps as the uninterrupted run.
    every = backed_up["every"] if backed_up else min(
        config.validate_every or max(1, math.ceil(total_steps / 5)), total_steps - first_step)
    plan = {"first_step": first_step, "every": every, "data": data_key}
    callbacks = build_callbacks(config, context, total_steps=total_steps,
                                initial_step=initial_step, global_batch=global_batch,
                                seq_len=seq_len, unit=unit, backup_dir=backup_dir, plan=plan,
                                history=backed_up["history"] if backed_up else None)
    _say(context, context.describe(),
         f"data {corpus.describe()}; global batch {global_batch} x {seq_len} tokens; "
         f"{layout.steps_per_epoch} steps per epoch",
         f"TransformerLM {config.preset} ({model.count_params():,} parameters); steps "
         f"{initial_step}->{total_steps}; peak lr {peak:.2e}{'; XLA' if config.xla else xla_off}"
         f"{'; ' + config.mixed_precision if config.mixed_precision else ''}")
    if backed_up:
        _say(context, f"resuming the interrupted run from its backup at step {initial_step} in "
             f"{backup_dir}")
        if backed_up["num_workers"] not in (None, context.num_workers):
            _say(context, f"the backup was written by {backed_up['num_workers']} worker(s), "
                 f"this run has {context.num_workers} ({context.num_replicas} replica(s)): the "
                 f"same global batch {global_batch}, so the same batches and the same trajectory")
    initial_epoch = first_step // every
    epochs = initial_epoch + math.ceil((total_steps - first_step) / every)
    history = model.fit(train_ds, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=every,
                        validation_data=val_ds, validation_steps=val_steps,
                        callbacks=list(callbacks.values()), verbose=0)
    steps_done = callbacks["stop"].step
    hist = _floats(history.history)
    train_loss = hist["loss"][-1]
    val_loss = hist["val_loss"][-1] if "val_loss" in hist else None
    speed = callbacks["throughput"].summary()

    state_out = {"step": steps_done, "data": data_key, "config": dataclasses.asdict(config),
                 "train_loss": train_loss, "val_loss": val_loss,
                 "tokens_per_sec": speed.get("tokens_per_sec"), "history": hist}
    output_dir = save(model, config, context, state_out, backup_dir)
    if backup_dir:  # only now that the model is saved are the backups no longer needed
        callbacks["backup"].delete_backups()
    sample = model.generate(config.prompt, config.sample_tokens, temperature=config.temperature,
                            top_k=config.top_k, seed=config.seed) \
        if context.is_chief and config.sample_tokens else None
    return TrainResult(
        steps=steps_done, initial_step=initial_step, global_batch_size=global_batch,
        seq_len=seq_len, num_replicas=context.num_replicas, num_workers=context.num_workers,
        parameters=int(model.count_params()), train_loss=train_loss, val_loss=val_loss,
        tokens_per_sec=speed.get("tokens_per_sec"),
        tokens_per_sec_per_replica=speed.get("tokens_per_sec_per_replica"),
        seconds=time.time() - started, output_dir=output_dir, sample=sample, unit=unit,
        history=hist)
