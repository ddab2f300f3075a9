"""Token corpora: a tokenizer and one token stream per split, read by contiguous ranges
(`token_dataset`). `StoredCorpus` (`store.py`) holds a sharded tfds dataset."""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Sequence

import numpy as np

from keras_dp.data.tokenizer import ByteTokenizer
from keras_dp.errors import ConfigError


def join_documents(documents: Iterable[bytes]) -> np.ndarray:
    """One byte stream of stripped documents joined by a blank line."""
    return np.frombuffer(b"\n\n".join(d.strip() for d in documents), dtype=np.uint8)


def split_train_validation(stream: np.ndarray) -> Dict[str, np.ndarray]:
    """Splits one token stream deterministically into train and validation: of blocks of
    8 KiB (smaller corpora: about 50 of at least 256 bytes), every tenth goes to validation."""
    block = int(max(256, min(8192, len(stream) // 50)))
    is_validation = (np.arange(len(stream)) // block) % 10 == 9
    return {"train": stream[~is_validation], "validation": stream[is_validation]}


class Corpus:
    """Base class: a tokenizer and one token stream per split.

    Attributes:
        name: A short description of the source (`"builtin"`, a path, ...).
        tokenizer: Encodes/decodes the tokens (`ByteTokenizer` for text).
        splits: The split names available.
    """

    name: str = "corpus"
    tokenizer = None

    @property
    def splits(self) -> Sequence[str]:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.vocab_size)

    def num_tokens(self, split: str) -> int:
        raise NotImplementedError

    def token_dataset(self, split: str, start: int, stop: int, input_context=None):
        """A `tf.data.Dataset` with ONE element: tokens `[start, stop)` of `split`."""
        raise NotImplementedError

    def tokens(self, split: str) -> np.ndarray:
        """The whole split as a numpy array."""
        raise NotImplementedError

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise ConfigError(f"the corpus {self.name!r} has no split {split!r}",
                              variable="split", received=split,
                              fix=f"use one of: {', '.join(self.splits)}")
        return split

    def describe(self) -> str:
        sizes = ", ".join(f"{s} {self.num_tokens(s):,}" for s in self.splits)
        return f"{self.name} ({sizes} tokens; vocabulary {self.vocab_size})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class InMemoryCorpus(Corpus):
    """A corpus whose splits are numpy arrays of token ids.

    Args:
        name: Description of the source.
        splits: Mapping split name -> 1-D integer array.
        tokenizer: The tokenizer (default: bytes).
    """

    def __init__(self, name: str, splits: Mapping[str, np.ndarray], tokenizer=None):
        self.name = name
        self.tokenizer = tokenizer or ByteTokenizer()
        dtype = np.uint8 if self.vocab_size <= 256 else np.int32
        self._splits = {k: np.ascontiguousarray(np.asarray(v).reshape(-1).astype(dtype))
                        for k, v in splits.items()}

    @property
    def splits(self) -> Sequence[str]:
        return tuple(self._splits)

    def num_tokens(self, split: str) -> int:
        return int(len(self._splits[self.check_split(split)]))

    def tokens(self, split: str) -> np.ndarray:
        return self._splits[self.check_split(split)]

    def token_dataset(self, split: str, start: int, stop: int, input_context=None):
        import tensorflow as tf

        return tf.data.Dataset.from_tensors(self.tokens(split)[start:stop])
