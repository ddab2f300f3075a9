"""A GPT-style decoder-only Transformer language model in Keras 3 layers, registered
serializable with its tokenizer in its config. See docs/data_and_models.md."""

from __future__ import annotations

import math
from typing import Any, Dict

import keras
from keras import ops

from keras_dp.data.tokenizer import tokenizer_from_config
from keras_dp.errors import ConfigError, whole_number
from keras_dp.models import generation, presets


def _init(stddev: float = 0.02):
    return keras.initializers.RandomNormal(stddev=stddev)


@keras.saving.register_keras_serializable(package="keras_dp")
class CausalSelfAttention(keras.layers.Layer):
    """Multi-head self-attention where position t sees positions <= t.

    Args:
        d_model: Width of the input and output.
        num_heads: Attention heads (must divide `d_model`).
        dropout: Dropout on the attention weights and the output.
        out_stddev: Initial std of the output projection.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0,
                 out_stddev: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        if d_model % num_heads:
            raise ConfigError(f"d_model={d_model} does not divide into {num_heads} heads",
                              variable="num_heads", received=num_heads,
                              fix="choose num_heads that divides d_model")
        self.d_model, self.num_heads, self.dropout_rate = d_model, num_heads, dropout
        self.out_stddev = out_stddev
        self.head_dim = d_model // num_heads
        self.qkv = keras.layers.Dense(3 * d_model, kernel_initializer=_init(), name="qkv",
                                      dtype=self.dtype_policy)
        self.out = keras.layers.Dense(d_model, kernel_initializer=_init(out_stddev),
                                      name="out", dtype=self.dtype_policy)
        self.dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.out.build(tuple(input_shape[:-1]) + (self.d_model,))
        self.built = True

    def call(self, x, training=None):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        qkv = ops.reshape(self.qkv(x), (batch, length, 3, self.num_heads, self.head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # [3, batch, heads, length, head_dim]
        query, key, value = qkv[0], qkv[1], qkv[2]
        scores = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2)))
        scores = ops.cast(scores, "float32") * (1.0 / math.sqrt(self.head_dim))
        positions = ops.arange(length)
        causal = positions[:, None] >= positions[None, :]
        scores = ops.where(causal[None, None], scores, -1e9)
        weights = ops.cast(ops.softmax(scores, axis=-1), self.compute_dtype)
        weights = self.dropout(weights, training=training)
        attended = ops.matmul(weights, value)  # [batch, heads, length, head_dim]
        attended = ops.reshape(ops.transpose(attended, (0, 2, 1, 3)),
                               (batch, length, self.d_model))
        return self.dropout(self.out(attended), training=training)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "d_model": self.d_model, "num_heads": self.num_heads,
                "dropout": self.dropout_rate, "out_stddev": self.out_stddev}


@keras.saving.register_keras_serializable(package="keras_dp")
class TransformerBlock(keras.layers.Layer):
    """Pre-LayerNorm block: `x + attn(ln(x))`, then `x + mlp(ln(x))`."""

    def __init__(self, d_model: int, num_heads: int, mlp_ratio: int = 4, dropout: float = 0.0,
                 out_stddev: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.d_model, self.num_heads, self.mlp_ratio = d_model, num_heads, mlp_ratio
        self.dropout_rate, self.out_stddev = dropout, out_stddev
        policy = self.dtype_policy
        self.ln_attention = keras.layers.LayerNormalization(epsilon=1e-5, name="ln_attention",
                                                            dtype=policy)
        self.attention = CausalSelfAttention(d_model, num_heads, dropout, out_stddev,
                                             name="attention", dtype=policy)
        self.ln_mlp = keras.layers.LayerNormalization(epsilon=1e-5, name="ln_mlp", dtype=policy)
        self.mlp_in = keras.layers.Dense(mlp_ratio * d_model, activation="gelu",
                                         kernel_initializer=_init(), name="mlp_in", dtype=policy)
        self.mlp_out = keras.layers.Dense(d_model, kernel_initializer=_init(out_stddev),
                                          name="mlp_out", dtype=policy)
        self.dropout = keras.layers.Dropout(dropout, dtype=policy)

    def build(self, input_shape):
        self.ln_attention.build(input_shape)
        self.attention.build(input_shape)
        self.ln_mlp.build(input_shape)
        self.mlp_in.build(input_shape)
        self.mlp_out.build(tuple(input_shape[:-1]) + (self.mlp_ratio * self.d_model,))
        self.built = True

    def call(self, x, training=None):
        x = x + self.attention(self.ln_attention(x), training=training)
        hidden = self.mlp_out(self.mlp_in(self.ln_mlp(x)))
        return x + self.dropout(hidden, training=training)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "d_model": self.d_model, "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio, "dropout": self.dropout_rate,
                "out_stddev": self.out_stddev}


@keras.saving.register_keras_serializable(package="keras_dp")
class TransformerLM(keras.Model):
    """GPT-style language model: `model(tokens)` -> logits `[batch, seq, vocab]`.

    Args:
        vocab_size: Number of token ids (256 for bytes).
        seq_len: Longest input (learned positions).
        d_model: Width.
        num_layers: Transformer blocks.
        num_heads: Attention heads per block.
        mlp_ratio: MLP width / d_model.
        dropout: Dropout rate (attention weights, block outputs, embeddings).
        tie_embeddings: Output head = transposed token embedding (else a Dense).
        tokenizer: The tokenizer, or its `get_config()` dict (default bytes);
            saved in the model's config, used by `generate`.
        **kwargs: `name`, `dtype` (a dtype policy, e.g. `"mixed_bfloat16"`), ...
    """

    def __init__(self, vocab_size: int = 256, seq_len: int = 128, d_model: int = 128,
                 num_layers: int = 2, num_heads: int = 4, mlp_ratio: int = 4,
                 dropout: float = 0.0, tie_embeddings: bool = True, tokenizer=None, **kwargs):
        super().__init__(**kwargs)
        sizes = dict(vocab_size=vocab_size, seq_len=seq_len, d_model=d_model,
                     num_layers=num_layers, num_heads=num_heads, mlp_ratio=mlp_ratio)
        vocab_size, seq_len, d_model, num_layers, num_heads, mlp_ratio = (
            whole_number(value, name) for name, value in sizes.items())
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError("must be in [0, 1)", variable="dropout", received=dropout)
        if tokenizer is None or isinstance(tokenizer, dict):
            tokenizer = tokenizer_from_config(tokenizer)
        if tokenizer.vocab_size > vocab_size:
            raise ConfigError(
                f"the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                f"{vocab_size}", variable="vocab_size", received=vocab_size,
                fix=f"use vocab_size >= {tokenizer.vocab_size}")
        self.vocab_size, self.seq_len, self.d_model = vocab_size, seq_len, d_model
        self.num_layers, self.num_heads, self.mlp_ratio = num_layers, num_heads, mlp_ratio
        self.dropout_rate, self.tie_embeddings = float(dropout), bool(tie_embeddings)
        self.tokenizer = tokenizer
        policy = self.dtype_policy
        out_stddev = 0.02 / math.sqrt(2 * num_layers)
        self.token_embedding = keras.layers.Embedding(
            vocab_size, d_model, embeddings_initializer=_init(), name="token_embedding",
            dtype=policy)
        self.position_embedding = keras.layers.Embedding(
            seq_len, d_model, embeddings_initializer=_init(0.01), name="position_embedding",
            dtype=policy)
        self.embedding_dropout = keras.layers.Dropout(self.dropout_rate, dtype=policy)
        self.blocks = [TransformerBlock(d_model, num_heads, mlp_ratio, self.dropout_rate,
                                        out_stddev, name=f"block_{i}", dtype=policy)
                       for i in range(num_layers)]
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm",
                                                          dtype=policy)
        self.head = None if self.tie_embeddings else keras.layers.Dense(
            vocab_size, kernel_initializer=_init(), name="head", dtype=policy)
        self._generator = None

    @classmethod
    def from_preset(cls, preset: str = "tiny", **overrides) -> "TransformerLM":
        """A model of a preset size (`"tiny"`, `"small"`, `"base"`), with overrides.

        Example: `TransformerLM.from_preset("small", seq_len=512, dropout=0.0)`.
        """
        return cls(**{**presets.preset(preset), **overrides})

    def compile(self, optimizer="adamw", loss=None, **kwargs):
        """`keras.Model.compile`; `loss` defaults to mean cross-entropy on the logits (nats per
        token)."""
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    def compile_from_config(self, config):
        """Restores the compiled state on load (Keras skips models that override `compile`)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def build(self, input_shape):
        hidden = tuple(input_shape) + (self.d_model,)
        self.token_embedding.build(input_shape)
        self.position_embedding.build((input_shape[-1],))
        for block in self.blocks:
            block.build(hidden)
        self.final_norm.build(hidden)
        if self.head is not None:
            self.head.build(hidden)
        self.built = True

    def call(self, tokens, training=None):
        length = ops.shape(tokens)[1]
        positions = ops.arange(length)
        x = self.token_embedding(tokens) + self.position_embedding(positions)[None]
        x = self.embedding_dropout(x, training=training)
        for block in self.blocks:
            x = block(x, training=training)
        x = self.final_norm(x)
        if self.head is None:
            table = ops.cast(self.token_embedding.embeddings, x.dtype)
            logits = ops.matmul(x, ops.transpose(table))
        else:
            logits = self.head(x)
        return ops.cast(logits, "float32")

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "trainable": self.trainable,
                "dtype": keras.dtype_policies.serialize(self.dtype_policy),
                "vocab_size": self.vocab_size, "seq_len": self.seq_len, "d_model": self.d_model,
                "num_layers": self.num_layers, "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio, "dropout": self.dropout_rate,
                "tie_embeddings": self.tie_embeddings, "tokenizer": self.tokenizer.get_config()}

    generate = generation.generate
