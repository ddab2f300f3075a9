"""The main job: train a Transformer LM data-parallel, report, save, sample.

`keras-dp train` is `train(TrainConfig(...))`; examples and benchmarks call
`train()` directly. The same call works on one CPU, several GPUs and several
workers (whatever `keras_dp.scope()` resolves): the data pipeline gives every
worker its own shard of each global batch, only the chief shows progress and
writes the output directory, and every worker ends with the same weights.

Example:

```python
from keras_dp.train import TrainConfig, train
result = train(TrainConfig(steps=200, output_dir="/tmp/lm"))
print(result.val_bits, result.tokens_per_sec)
```
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

from keras_dp.errors import ConfigError

log = logging.getLogger("keras_dp")

MODEL_FILE = "model.keras"
STATE_FILE = "train_state.json"
BACKUP_DIR = "backup"
MIXED_PRECISION = (None, "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass
class TrainConfig:
    """Everything `train()` needs; the defaults are `keras-dp train` with no arguments.

    Data: `data` (source, see `keras_dp.data.text_dataset`), `data_dir`,
    `cache_dir`, `text_feature`. Model: `preset` and overrides (`seq_len`,
    `d_model`, `num_layers`, `num_heads`, `dropout`). Length: `steps` (total
    optimizer steps) or `epochs` (passes over the training split). Batch:
    `batch_size` per replica, or `global_batch_size`. Optimizer: AdamW with
    `learning_rate` for `base_batch` scaled linearly to the global batch,
    `warmup_steps` of linear warmup, `decay` to `min_lr_ratio`, `weight_decay`,
    `clipnorm` (per tensor) or `global_clipnorm`. Speed: `mixed_precision`,
    `xla`, `steps_per_execution`.
    Output: `output_dir` (chief only), `sample_tokens`, `prompt`,
    `temperature`, `top_k`. Run: `seed`, `resume`, `validate_every`,
    `val_steps`, `progress`, `strategy`, `cpu_replicas`. Fault tolerance:
    `backup` (on by default), `backup_every` steps, `backup_dir` (default
    `<output_dir>/backup`), `keep_backups` (how many are kept; a damaged one
    is reported and the next older one restored).
    """

    data: Any = "builtin"
    data_dir: Optional[str] = None
    cache_dir: Optional[str] = None
    text_feature: Optional[str] = None
    preset: str = "tiny"
    seq_len: Optional[int] = None
    d_model: Optional[int] = None
    num_layers: Optional[int] = None
    num_heads: Optional[int] = None
    dropout: Optional[float] = None
    steps: Optional[int] = None
    epochs: Optional[float] = None
    batch_size: int = 32
    global_batch_size: Optional[int] = None
    learning_rate: float = 5e-3
    base_batch: int = 32
    warmup_steps: int = 60
    decay: str = "cosine"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.01
    # Keras 3 alone clips each replica's gradients BEFORE the all-reduce;
    # keras_dp.keras_fix (gradient_clipping) makes it clip the global gradient.
    clipnorm: Optional[float] = None
    global_clipnorm: Optional[float] = None
    mixed_precision: Optional[str] = None
    # None: XLA (several CPU replicas only with keras_fix's replica_xla, see `_use_xla`).
    xla: Optional[bool] = None
    steps_per_execution: int = 1
    output_dir: str = "keras_dp_output"
    seed: int = 0
    resume: bool = False
    backup: bool = True
    backup_every: int = 100
    backup_dir: Optional[str] = None
    keep_backups: int = 2
    validate_every: Optional[int] = None
    val_steps: Optional[int] = 50
    sample_tokens: int = 200
    prompt: str = "The "
    temperature: float = 0.8
    top_k: Optional[int] = 40
    progress: str = "auto"
    strategy: str = "auto"
    cpu_replicas: Optional[int] = None

    #: Steps of the default run (tuned to end in about 3 minutes on 2 CPU cores).
    DEFAULT_STEPS = 600

    def check(self) -> None:
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError("unknown mixed precision policy", variable="mixed_precision",
                              received=self.mixed_precision,
                              fix="use mixed_bfloat16, mixed_float16 or leave it unset")
        if self.clipnorm and self.global_clipnorm:
            raise ConfigError("give clipnorm or global_clipnorm, not both",
                              variable="global_clipnorm", received=self.global_clipnorm)
        if self.steps is not None and self.epochs is not None:
            raise ConfigError("give steps or epochs, not both", variable="epochs",
                              received=self.epochs)
        for name in ("steps", "batch_size", "global_batch_size", "validate_every", "val_steps",
                     "steps_per_execution", "backup_every", "keep_backups"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value
                                      or value < 1):
                raise ConfigError("must be a whole number >= 1", variable=name, received=value)
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError("must be > 0", variable="epochs", received=self.epochs)


@dataclasses.dataclass
class TrainResult:
    """What `train()` measured and wrote.

    Losses are mean cross-entropies in nats per token; `*_bits` are the same
    in bits per token, which for the byte tokenizer is bits per byte.
    """

    steps: int
    initial_step: int
    global_batch_size: int
    seq_len: int
    num_replicas: int
    num_workers: int
    parameters: int
    train_loss: float
    val_loss: Optional[float]
    tokens_per_sec: Optional[float]
    tokens_per_sec_per_replica: Optional[float]
    seconds: float
    output_dir: Optional[str]
    sample: Optional[str]
    unit: str
    history: Dict[str, List[float]]

    @property
    def train_bits(self) -> float:
        return self.train_loss / math.log(2)

    @property
    def val_bits(self) -> Optional[float]:
        return None if self.val_loss is None else self.val_loss / math.log(2)

    def to_json(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(train_bits=self.train_bits, val_bits=self.val_bits)
        return data


def build_callbacks(config: TrainConfig, context, *, total_steps: int, initial_step: int,
                    global_batch: int, seq_len: int, unit: str,
                    backup_dir: Optional[str] = None, plan: Optional[Dict[str, Any]] = None,
                    history: Optional[Dict[str, List[float]]] = None) -> Dict[str, Any]:
    """The job's callbacks, by name, in the order `fit` runs them.

    This is THE place where the job's callbacks are assembled.

    Args:
        backup_dir: Where `BackupAndRestore` keeps the backups (None: no backups).
        plan: What each backup records about the job (where its plan of
            epochs began, their length, the data settings), with the history.
        history: Epoch logs of the run so far (when resuming from a backup).

    Returns:
        An ordered dict: `backup` (when `backup_dir`; worker-aware
        `BackupAndRestore` every `config.backup_every` steps, the data is
        positioned by the job so nothing is replayed), `lr` (adds the
        learning rate to the logs), `throughput` (tokens/s), `stop` (ends at
        exactly `total_steps`), `progress` (chief-only display), `history`
        (Keras' `History`, continuing `history`).
    """
    import keras

    from keras_dp.callbacks import (BackupAndRestore, LearningRateLogger, Progress, Throughput,
                                    is_replayed_step)
    from keras_dp.callbacks.backup import steps_per_batch

    class StopAtStep(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.step = initial_step

        def on_train_batch_end(self, batch, logs=None):
            if is_replayed_step(self.model, batch):
                return  # done before the backup this run resumed from
            self.step += steps_per_batch(self.model)
            if self.step >= total_steps:
                self.model.stop_training = True

    callbacks = {}
    history_callback = keras.callbacks.History()
    history_callback.history = {k: list(v) for k, v in (history or {}).items()}
    if backup_dir:
        # The job keeps the backups until its final model is saved, and starts
        # its input at the resumed step (nothing to replay).
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


def _total_steps(config: TrainConfig, layout) -> int:
    if config.steps is not None:
        return int(config.steps)
    if config.epochs is not None:
        return max(1, int(round(config.epochs * layout.steps_per_epoch)))
    return TrainConfig.DEFAULT_STEPS


def _make_model(config: TrainConfig, vocab_size: int, tokenizer):
    from keras_dp.models import TransformerLM

    overrides = {k: getattr(config, k) for k in ("seq_len", "d_model", "num_layers",
                                                 "num_heads", "dropout")
                 if getattr(config, k) is not None}
    if config.mixed_precision:
        overrides["dtype"] = config.mixed_precision
    return TransformerLM.from_preset(config.preset, vocab_size=vocab_size, tokenizer=tokenizer,
                                     **overrides)


def _use_xla(requested: Optional[bool], context) -> bool:
    """Whether the job compiles its train step with XLA on this strategy.

    With several replicas, keras_dp's Keras fix (part `replica_xla`) compiles
    each replica's forward and backward pass and leaves the all-reduce and
    the update outside XLA, which TensorFlow can run on CPUs too. Without
    that part TensorFlow (2.20, 2.21) cannot XLA-compile a step over several
    CPU replicas: under MirroredStrategy over logical CPUs the compiled step
    reads a variable of another device ("Trying to access resource ...
    located in device CPU:1 from device CPU:0"), and under
    MultiWorkerMirroredStrategy XLA has no CPU kernel for the embedding
    gradient's `CollectiveGatherV2`.

    Args:
        requested: `TrainConfig.xla`: None (decide), True or False.
        context: The `keras_dp.scope()` context.

    Returns:
        `requested` if given, else True unless several replicas run on CPUs
        without the part `replica_xla`.

    Raises:
        ConfigError: XLA was asked for where TensorFlow cannot compile the step.
    """
    from keras_dp import keras_fix

    if context.num_replicas <= 1 or keras_fix.is_applied("replica_xla"):
        return True if requested is None else bool(requested)
    try:
        devices = tuple(context.strategy.extended.worker_devices)
    except (AttributeError, RuntimeError):   # a strategy without device list
        devices = ()
    on_cpu = bool(devices) and all("CPU" in str(d).upper().rsplit("/", 1)[-1]
                                   for d in devices)
    if requested is None:
        return not on_cpu
    if requested and on_cpu:
        raise ConfigError(
            f"TensorFlow cannot XLA-compile a train step over {context.num_replicas} CPU "
            "replicas without the Keras fix's part replica_xla (KERAS_DP_KERAS_FIX leaves it "
            "out): MirroredStrategy over logical CPUs reads another device's variables; "
            "MultiWorkerMirroredStrategy has no XLA CPU kernel for CollectiveGatherV2",
            variable="xla", received=True,
            fix="allow the part replica_xla (unset KERAS_DP_KERAS_FIX) or pass --no-xla")
    return bool(requested)


def _compile(model, config: TrainConfig, schedule):
    import keras

    optimizer = keras.optimizers.AdamW(
        schedule, weight_decay=config.weight_decay, beta_1=0.9, beta_2=0.99,
        clipnorm=config.clipnorm or None, global_clipnorm=config.global_clipnorm or None)
    # Norms, biases and position embeddings are not decayed.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias", "position"])
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=bool(config.xla), steps_per_execution=config.steps_per_execution)


def _read_state(output_dir: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(output_dir, STATE_FILE)
    if not os.path.exists(path) or not os.path.exists(os.path.join(output_dir, MODEL_FILE)):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _restore(model, saved) -> None:
    """Copies weights and optimizer state (moments, step count) of `saved` into `model`."""
    model.set_weights(saved.get_weights())
    model.optimizer.build(model.trainable_variables)
    source = saved.optimizer.variables
    target = model.optimizer.variables
    if len(source) != len(target):
        raise ConfigError("the saved optimizer state does not match this model",
                          variable="resume", received=True,
                          fix="resume with the same model options, or use a new --output-dir")
    for to, frm in zip(target, source):
        if tuple(to.shape) != tuple(frm.shape):
            raise ConfigError(f"the saved optimizer variable {frm.path} has shape "
                              f"{tuple(frm.shape)}, not {tuple(to.shape)}",
                              variable="resume", received=True,
                              fix="resume with the same model options, or use a new --output-dir")
        to.assign(frm.value)


def _resume_point(config: TrainConfig, data_key: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    state = _read_state(config.output_dir)
    if state is None:
        return None
    if state.get("data") != data_key:
        raise ConfigError(
            f"the run in {config.output_dir} used other data settings ({state.get('data')}); "
            "resuming needs the same data, seq_len, global batch and seed to continue the "
            "same sequence of batches", variable="resume", received=True,
            fix="resume with the earlier settings, or use a new --output-dir")
    return state


def _floats(history: Dict[str, List[Any]]) -> Dict[str, List[float]]:
    return {k: [float(v) for v in values] for k, values in history.items()}


def _has_backup(config: TrainConfig) -> bool:
    from keras_dp.callbacks import latest_backup

    return latest_backup(config.backup_dir or os.path.join(config.output_dir, BACKUP_DIR)) \
        is not None


def backup_dir_of(config: TrainConfig) -> Optional[str]:
    """Where the job keeps its backups (None with `backup=False`)."""
    if not config.backup:
        return None
    return config.backup_dir or os.path.join(config.output_dir, BACKUP_DIR)


def _backup_point(config: TrainConfig, backup_dir: Optional[str],
                  data_key: Dict[str, Any], total_steps: int) -> Optional[Dict[str, Any]]:
    """The interrupted run to continue from `backup_dir`, or None.

    Returns:
        `{"step": steps done, "first_step": where that run's plan started,
        "every": its validation interval, "history": its epoch logs}`.
    """
    from keras_dp.callbacks import latest_backup

    found = latest_backup(backup_dir)
    if found is None:
        return None
    job = (found.get("metadata") or {}).get("job")
    fix = (f"run the interrupted command again unchanged, or delete {backup_dir} "
           "(or pass --no-backup) to start over")
    if not job:
        raise ConfigError(f"{backup_dir} holds backups that keras-dp train did not write",
                          variable="backup_dir", received=backup_dir,
                          fix="use another --backup-dir / --output-dir, or delete it")
    if job.get("data") != data_key:
        before = (job.get("data") or {}).get("global_batch_size")
        if before != data_key["global_batch_size"] and before is not None:
            # Resizing keeps the run only with its global batch (docs/resizing.md).
            fix = (f"to continue it on another number of workers or replicas, keep its "
                   f"global batch: pass --global-batch-size {before}; or " + fix)
        raise ConfigError(
            f"the interrupted run backed up in {backup_dir} used other data settings "
            f"({job.get('data')}); continuing needs the same data, seq_len, global batch and "
            "seed", variable="backup_dir", received=backup_dir, fix=fix)
    step = int(job["first_step"]) + int(found["global_step"])
    # step == total_steps: training ended (e.g. a preemption agreed on the last
    # step) but the final validation and save did not happen; the run finishes them.
    if step > total_steps:
        raise ConfigError(
            f"the interrupted run backed up in {backup_dir} already trained {step} steps",
            variable="steps", received=total_steps,
            fix=f"pass --steps larger than {step}, or delete {backup_dir} to start over")
    return {"step": step, "first_step": int(job["first_step"]), "every": int(job["every"]),
            "history": (found.get("metadata") or {}).get("history") or {},
            "num_workers": found.get("num_workers")}


def _save(model, config: TrainConfig, context, state: Dict[str, Any],
          backup_dir: Optional[str] = None) -> Optional[str]:
    """Every worker saves (saving may need all of them); only the chief keeps it.

    Each file is written under a temporary name and renamed, so a full disk
    leaves the files of an earlier run whole.

    Raises:
        ConfigError: The disk refused the save (full, read-only); the
            backups are kept, so the same command finishes the run later.
    """
    from keras_dp.callbacks._storage import free_space, is_storage_error, write_atomically
    from keras_dp.data.tokenizer import TOKENIZER_FILE

    if not context.is_chief:
        # The save still runs here (it may need every worker); keras_dp's
        # chief_saving part (or this private directory) keeps it off the paths.
        target = tempfile.mkdtemp(prefix="keras_dp_")
        try:
            model.save(os.path.join(target, MODEL_FILE))
        finally:
            shutil.rmtree(target, ignore_errors=True)
        return None
    target = config.output_dir
    try:
        os.makedirs(target, exist_ok=True)
        write_atomically(os.path.join(target, MODEL_FILE), model.save, suffix=".keras")
        write_atomically(os.path.join(target, TOKENIZER_FILE),
                         lambda temp: _write_json(temp, model.tokenizer.get_config()))
        write_atomically(os.path.join(target, STATE_FILE), lambda temp: _write_json(temp, state))
    except Exception as exc:  # noqa: BLE001 - only a refused write is explained
        if not is_storage_error(exc):
            raise
        kept = (f"the backups in {backup_dir} are kept: free space and run the same command "
                "again, it finishes from the last backup" if backup_dir else
                "free space and run again")
        raise ConfigError(f"could not save the trained model in {target} ({exc}; "
                          f"{free_space(target)})", variable="output_dir", received=target,
                          fix=kept) from None
    return target


def _write_json(path: str, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, default=str)
        handle.flush()
        os.fsync(handle.fileno())


def train(config: Optional[TrainConfig] = None, **options) -> TrainResult:
    """Runs the main job; see the module docstring and `TrainConfig`.

    Args:
        config: A `TrainConfig` (default: the defaults).
        **options: Fields of `TrainConfig` to override.

    Returns:
        A `TrainResult` (on every worker; `output_dir` and `sample` only on
        the chief).
    """
    config = dataclasses.replace(config or TrainConfig(), **options)
    config.check()
    started = time.time()

    import keras_dp

    context = keras_dp.scope(config.strategy, cpu_replicas=config.cpu_replicas)
    xla_off = "" if config.xla is False else "; no XLA (several CPU replicas, no replica_xla)"
    config = dataclasses.replace(config, xla=_use_xla(config.xla, context))
    import keras

    from keras_dp import data as data_lib
    from keras_dp.schedules import WarmupSchedule, scaled_learning_rate

    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    corpus = data_lib.load_corpus(config.data, data_dir=config.data_dir,
                                  cache_dir=config.cache_dir, text_feature=config.text_feature)
    tokenizer = corpus.tokenizer
    unit = "byte" if tokenizer.kind == "bytes" else "token"
    from keras_dp.models import PRESETS

    if config.preset not in PRESETS:
        raise ConfigError("is not a preset", variable="preset", received=config.preset,
                          fix=f"use one of: {', '.join(PRESETS)}")
    seq_len = config.seq_len or PRESETS[config.preset]["seq_len"]
    global_batch = config.global_batch_size or config.batch_size * context.num_replicas
    data_lib.per_replica_batch_size(global_batch, context.num_replicas)
    layout = data_lib.StreamLayout(corpus.num_tokens("train"), global_batch, seq_len)
    total_steps = _total_steps(config, layout)
    data_key = {"source": corpus.name, "seq_len": seq_len, "global_batch_size": global_batch,
                "seed": config.seed}
    backup_dir = backup_dir_of(config)
    backed_up = _backup_point(config, backup_dir, data_key, total_steps) if backup_dir \
        else None
    # A backup (an interrupted run) wins over --resume (a finished run's saved model):
    # it is newer, and holds the whole training state.
    state = _resume_point(config, data_key) if config.resume and not backed_up else None
    first_step = backed_up["first_step"] if backed_up else int(state["step"]) if state else 0
    initial_step = backed_up["step"] if backed_up else first_step
    if not backed_up and initial_step >= total_steps:
        raise ConfigError(f"the run in {config.output_dir} already trained {initial_step} "
                          f"steps", variable="steps", received=total_steps,
                          fix=f"pass --steps larger than {initial_step} to train further")
    if not backup_dir and context.is_chief and _has_backup(config):
        print(f"keras-dp train: --no-backup: ignoring the backup of an interrupted run in "
              f"{os.path.join(config.output_dir, BACKUP_DIR)}", file=sys.stderr)

    peak = scaled_learning_rate(config.learning_rate, global_batch, config.base_batch)
    schedule = WarmupSchedule(peak, min(config.warmup_steps, max(0, total_steps - 1)),
                              total_steps, config.decay, config.min_lr_ratio)
    with context:
        model = _make_model(config, corpus.vocab_size, tokenizer)
        _compile(model, config, schedule)
        model.build((None, seq_len))
        if state:
            saved = keras.saving.load_model(os.path.join(config.output_dir, MODEL_FILE))
            _restore(model, saved)
            del saved
    # The batches depend only on the step: the input starts where training resumes,
    # so the backup callback reads nothing to catch up (replay_data=False).
    train_ds = data_lib.text_dataset(corpus, split="train", seq_len=seq_len,
                                     global_batch_size=global_batch, seed=config.seed,
                                     start_step=initial_step, strategy=context.strategy)
    val_ds, val_steps = None, None
    if "validation" in corpus.splits and corpus.num_tokens("validation") >= \
            global_batch * (seq_len + 1):
        val_layout = data_lib.StreamLayout(corpus.num_tokens("validation"), global_batch,
                                           seq_len)
        val_steps = min(val_layout.steps_per_epoch, config.val_steps or 10 ** 9)
        # The same `val_steps` batches, repeated: Keras' symbolic build under a
        # distribution strategy takes a batch from the eval iterator before
        # resetting it, which would exhaust a dataset of exactly `val_steps`.
        val_ds = data_lib.text_dataset(corpus, split="validation", seq_len=seq_len,
                                       global_batch_size=global_batch, shuffle=False,
                                       repeat=True, epoch_steps=val_steps,
                                       strategy=context.strategy)
    elif context.is_chief:
        print("keras-dp train: the validation split is too small for this batch; "
              "reporting training loss only", file=sys.stderr)

    # Epochs are validation intervals of `every` steps counted from `first_step`
    # (where this plan began); a run resumed from a backup keeps its plan, so it
    # validates at the same steps as the uninterrupted run.
    every = backed_up["every"] if backed_up else min(
        config.validate_every or max(1, math.ceil(total_steps / 5)), total_steps - first_step)
    plan = {"first_step": first_step, "every": every, "data": data_key}
    callbacks = build_callbacks(config, context, total_steps=total_steps,
                                initial_step=initial_step, global_batch=global_batch,
                                seq_len=seq_len, unit=unit, backup_dir=backup_dir, plan=plan,
                                history=backed_up["history"] if backed_up else None)
    if context.is_chief:
        print(f"keras-dp train: {context.describe()}", file=sys.stderr)
        print(f"keras-dp train: data {corpus.describe()}; global batch {global_batch} x "
              f"{seq_len} tokens; {layout.steps_per_epoch} steps per epoch", file=sys.stderr)
        print(f"keras-dp train: TransformerLM {config.preset} ({model.count_params():,} "
              f"parameters); steps {initial_step}->{total_steps}; peak lr {peak:.2e}"
              f"{'; XLA' if config.xla else xla_off}"
              f"{'; ' + config.mixed_precision if config.mixed_precision else ''}",
              file=sys.stderr)
        if backed_up:
            print(f"keras-dp train: resuming the interrupted run from its backup at step "
                  f"{initial_step} in {backup_dir}", file=sys.stderr)
            if backed_up["num_workers"] not in (None, context.num_workers):
                print(f"keras-dp train: the backup was written by {backed_up['num_workers']} "
                      f"worker(s), this run has {context.num_workers} ({context.num_replicas} "
                      f"replica(s)): the same global batch {global_batch}, so the same batches "
                      "and the same trajectory", file=sys.stderr)
    initial_epoch = first_step // every
    history = model.fit(train_ds, epochs=initial_epoch + math.ceil((total_steps - first_step)
                                                                   / every),
                        initial_epoch=initial_epoch, steps_per_epoch=every,
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
    output_dir = _save(model, config, context, state_out, backup_dir)
    if backup_dir:
        # Only now that the model is saved are the backups no longer needed.
        callbacks["backup"].delete_backups()
    sample = None
    if context.is_chief and config.sample_tokens:
        sample = model.generate(config.prompt, config.sample_tokens,
                                temperature=config.temperature, top_k=config.top_k,
                                seed=config.seed)
    return TrainResult(
        steps=steps_done, initial_step=initial_step, global_batch_size=global_batch,
        seq_len=seq_len, num_replicas=context.num_replicas, num_workers=context.num_workers,
        parameters=int(model.count_params()), train_loss=train_loss, val_loss=val_loss,
        tokens_per_sec=speed.get("tokens_per_sec"),
        tokens_per_sec_per_replica=speed.get("tokens_per_sec_per_replica"),
        seconds=time.time() - started, output_dir=output_dir, sample=sample, unit=unit,
        history=hist)


def format_report(result: TrainResult, prompt: str = "") -> str:
    """The summary `keras-dp train` prints."""
    unit = f"bits/{result.unit}"
    lines = [f"trained {result.steps - result.initial_step} steps "
             f"(to step {result.steps}) in {result.seconds:.0f} s on "
             f"{result.num_replicas} replica(s), {result.num_workers} worker(s); "
             f"{result.parameters:,} parameters",
             f"train loss      {result.train_loss:.4f} nats  {result.train_bits:.3f} {unit}"]
    if result.val_loss is not None:
        lines.append(f"validation loss {result.val_loss:.4f} nats  {result.val_bits:.3f} {unit}")
    if result.tokens_per_sec:
        lines.append(f"throughput      {result.tokens_per_sec:,.0f} tokens/s "
                     f"({result.tokens_per_sec_per_replica:,.0f} per replica)")
    if result.output_dir:
        lines.append(f"saved           {os.path.join(result.output_dir, MODEL_FILE)} "
                     f"(+ tokenizer.json, {STATE_FILE})")
    if result.sample is not None:
        lines.append("sample:")
        lines.append(prompt + result.sample)
    return "\n".join(lines)
