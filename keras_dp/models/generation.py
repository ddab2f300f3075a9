"""Sampling text from a `TransformerLM`: greedy, temperature and top-k."""

from __future__ import annotations

from typing import Optional

import numpy as np

from keras_dp.errors import ConfigError


def sample_token(logits: np.ndarray, rng: np.random.Generator, *, temperature: float = 1.0,
                 top_k: Optional[int] = None, greedy: bool = False) -> int:
    """Picks the next token from one row of logits."""
    logits = np.asarray(logits, dtype=np.float64)
    if greedy:
        return int(np.argmax(logits))
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        cutoff = np.partition(logits, -top_k)[-top_k]
        logits = np.where(logits >= cutoff, logits, -np.inf)
    probs = np.exp(logits - np.max(logits))
    probs /= probs.sum()
    return int(rng.choice(len(probs), p=probs))


def generate(model, prompt="", max_new_tokens: int = 200, *, temperature: float = 1.0,
             top_k: Optional[int] = None, greedy: bool = False, seed: Optional[int] = None,
             return_ids: bool = False):
    """Continues `prompt`, decoding with the model's tokenizer (`TransformerLM.generate`).

    Args:
        prompt: Text (or token ids) to continue.
        max_new_tokens: Tokens to generate.
        temperature: Sampling temperature (> 0); lower is more conservative.
        top_k: Sample only among the k most likely tokens.
        greedy: Always take the most likely token (ignores temperature/top_k).
        seed: Seed of the sampler (same seed, same text).
        return_ids: Return the new token ids instead of text.

    Returns:
        The continuation (without the prompt) as text, or its ids.

    Raises:
        ConfigError: a bad `temperature` or `top_k`, or prompt ids outside the vocabulary.
    """
    import tensorflow as tf

    if not temperature > 0:
        raise ConfigError("must be > 0", variable="temperature", received=temperature,
                          fix="use e.g. 0.8, or greedy=True")
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) < 1):
        raise ConfigError("must be a whole number >= 1 or None", variable="top_k",
                          received=top_k)
    tokenizer = model.tokenizer
    ids = [int(i) for i in (tokenizer.encode(prompt) if isinstance(prompt, (str, bytes))
                            else prompt)]
    if any(not 0 <= i < model.vocab_size for i in ids):
        raise ConfigError("holds token ids outside the vocabulary", variable="prompt",
                          received=prompt)
    rng = np.random.default_rng(seed)
    if getattr(model, "_generator", None) is None:  # f(window, position) -> logits, one trace
        model._generator = tf.function(lambda window, position: model(
            window, training=False)[0, position], reduce_retracing=True)
    if not ids:
        ids = [int(rng.integers(model.vocab_size))] if tokenizer.kind != "bytes" else [10]
    start = len(ids)
    for _ in range(int(max_new_tokens)):
        context = ids[-model.seq_len:]
        window = np.zeros((1, model.seq_len), dtype=np.int32)
        window[0, :len(context)] = context
        logits = model._generator(tf.constant(window), tf.constant(len(context) - 1)).numpy()
        ids.append(sample_token(logits[: tokenizer.vocab_size], rng, temperature=temperature,
                                top_k=top_k, greedy=greedy))
    new = ids[start:]
    return new if return_ids else tokenizer.decode(new)
