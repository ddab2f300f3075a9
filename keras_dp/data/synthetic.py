"""A synthetic corpus with a known entropy rate (the best possible loss): a seeded random
Markov chain, the same tokens on every machine."""

from __future__ import annotations

import bisect
from typing import Dict

import numpy as np

from keras_dp.data.corpus import InMemoryCorpus
from keras_dp.data.tokenizer import IdTokenizer
from keras_dp.errors import ConfigError, whole_number

_OPTIONS = ("vocab", "order", "tokens", "validation_tokens", "seed", "alpha")


class MarkovCorpus(InMemoryCorpus):
    """Tokens drawn from an order-`order` Markov chain with random transitions.

    Each context of `order` previous tokens has its own next-token distribution, drawn
    from a symmetric Dirichlet(`alpha`); `train` and `validation` are independent runs.

    Args:
        vocab: Number of distinct tokens.
        order: Tokens of context that determine the next token's distribution.
        tokens: Length of the train split.
        validation_tokens: Length of the validation split.
        seed: Seed of the transitions and the samples.
        alpha: Dirichlet concentration of each transition distribution.

    Attributes:
        entropy_rate: The chain's entropy rate in nats per token, the lowest
            expected loss any model can reach.
    """

    def __init__(self, vocab: int = 16, order: int = 1, tokens: int = 200_000,
                 validation_tokens: int = 20_000, seed: int = 0, alpha: float = 0.3):
        for name, value, low in (("vocab", vocab, 2), ("order", order, 1), ("tokens", tokens, 2),
                                 ("validation_tokens", validation_tokens, 0)):
            whole_number(value, name, minimum=low)
        if vocab ** order > 1_000_000:
            raise ConfigError("vocab ** order is over a million contexts", variable="order",
                              received=order, fix="use a smaller vocabulary or order")
        if not alpha > 0:
            raise ConfigError("must be > 0", variable="alpha", received=alpha)
        self.vocab, self.order, self.seed, self.alpha = int(vocab), int(order), int(seed), alpha
        rng = np.random.default_rng([self.seed, 7919])
        contexts = self.vocab ** self.order
        self.transitions = rng.dirichlet([alpha] * self.vocab, size=contexts)
        self.entropy_rate = _entropy_rate(self.transitions, self.vocab)
        splits = {"train": self._sample(int(tokens), [self.seed, 1]),
                  "validation": self._sample(int(validation_tokens), [self.seed, 2])}
        super().__init__(f"synthetic:vocab={vocab},order={order},tokens={tokens},seed={seed},"
                         f"alpha={alpha}", splits, IdTokenizer(self.vocab))

    @classmethod
    def from_spec(cls, spec: str) -> "MarkovCorpus":
        """Parses `"synthetic"` or `"synthetic:vocab=16,order=1,tokens=200000,seed=0"`."""
        options: Dict[str, object] = {}
        for item in filter(None, (part.strip() for part in spec.partition(":")[2].split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in _OPTIONS:
                raise ConfigError(
                    f"bad synthetic corpus option {item!r}", variable="source",
                    received=spec, fix="write synthetic:vocab=16,order=1,tokens=200000,"
                                       "validation_tokens=20000,seed=0,alpha=0.3")
            try:
                options[key] = float(value) if key == "alpha" else int(value)
            except ValueError:
                raise ConfigError(f"option {key} is not a number", variable="source",
                                  received=spec) from None
        return cls(**options)

    def _sample(self, length: int, seed) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty(length, dtype=np.int64)
        start = rng.integers(0, self.vocab, size=min(self.order, length))
        out[: len(start)] = start
        contexts = self.vocab ** self.order
        context = 0
        for token in start:
            context = (context * self.vocab + int(token)) % contexts
        cumulative = np.cumsum(self.transitions, axis=1)
        cumulative /= cumulative[:, -1:]
        rows = cumulative.tolist()
        last = self.vocab - 1
        draws = rng.random(length).tolist()
        for t in range(self.order, length):
            token = min(bisect.bisect_right(rows[context], draws[t]), last)
            out[t] = token
            context = (context * self.vocab + token) % contexts
        return out


def _entropy_rate(transitions: np.ndarray, vocab: int) -> float:
    """Entropy rate (nats/token) = sum over contexts of stationary prob x entropy."""
    contexts = transitions.shape[0]
    # Context c = (a_1..a_k) moves to (a_2..a_k, x) with probability P[c, x].
    following = (np.arange(contexts)[:, None] * vocab) % contexts + np.arange(vocab)[None, :]
    stationary = np.full(contexts, 1.0 / contexts)
    for _ in range(10_000):
        updated = np.zeros(contexts)
        np.add.at(updated, following.reshape(-1), (stationary[:, None] * transitions).reshape(-1))
        converged = np.max(np.abs(updated - stationary)) < 1e-13
        stationary = updated
        if converged:
            break
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(transitions > 0, np.log(transitions), 0.0)
    entropies = -np.sum(transitions * logs, axis=1)
    return float(np.dot(stationary, entropies))
