"""Models: `TransformerLM`, a GPT-style decoder-only language model (`from_preset("tiny")`,
`model(tokens)` -> logits, `model.generate(prompt)`). See docs/data_and_models.md."""

import keras_dp.schedules  # noqa: F401  (registers WarmupSchedule: saved optimizers load)
from keras_dp.models.presets import PRESETS
from keras_dp.models.transformer import CausalSelfAttention, TransformerBlock, TransformerLM

__all__ = ["PRESETS", "CausalSelfAttention", "TransformerBlock", "TransformerLM"]
