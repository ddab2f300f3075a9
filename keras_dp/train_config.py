"""`keras-dp train`'s settings (`TrainConfig`), its result (`TrainResult`) and report."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Dict, List, Optional

from keras_dp.errors import ConfigError, whole_number

MODEL_FILE = "model.keras"
#: The record of a finished run (step, data, settings, losses, history); not read back.
STATE_FILE = "train_state.json"
BACKUP_DIR = "backup"


@dataclasses.dataclass
class TrainConfig:
    """Everything `train()` needs; the defaults are `keras-dp train` with no arguments.

    Every field is a flag `--field-name` (tests check); see docs/train_job.md.
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
    clipnorm: Optional[float] = None
    global_clipnorm: Optional[float] = None
    mixed_precision: Optional[str] = None
    # None: XLA where TensorFlow can compile the step (keras_dp.xla.use_xla).
    xla: Optional[bool] = None
    steps_per_execution: int = 1
    output_dir: str = "keras_dp_output"
    seed: int = 0
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
        """Raises `ConfigError` (naming the field) for contradicting or out-of-range settings."""
        if self.mixed_precision not in (None, "mixed_bfloat16", "mixed_float16"):
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
            if getattr(self, name) is not None:
                whole_number(getattr(self, name), name)
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError("must be > 0", variable="epochs", received=self.epochs)


@dataclasses.dataclass
class TrainResult:
    """What `train()` measured and wrote: losses in nats per token, `*_bits` in bits per token."""

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
        return dict(dataclasses.asdict(self), train_bits=self.train_bits, val_bits=self.val_bits)


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
        lines += ["sample:", prompt + result.sample]
    return "\n".join(lines)
