"""Token corpora: what `text_dataset` reads, as one token stream per split.

A corpus is a tokenizer plus, for each split (`"train"`, `"validation"`,
...), one long stream of token ids. The input pipelines only ever ask a
corpus for a contiguous range of a split's stream (`token_dataset`), which is
what lets every worker read just its own part (see `keras_dp/data/pipeline.py`).

Two kinds exist: `InMemoryCorpus` (the builtin corpus, the synthetic Markov
corpus, or any numpy arrays) and `StoredCorpus` (local files and
tensorflow-datasets sources, converted once into a sharded tfds dataset; see
`keras_dp/data/store.py`).
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

import numpy as np

from keras_dp.errors import ConfigError

#: Documents of a text source are joined with this separator.
DOCUMENT_SEPARATOR = b"\n\n"
#: Every `VALIDATION_EVERY`-th block of a text stream (the last of each run of
#: ten) goes to the validation split, when the source has no validation split.
VALIDATION_EVERY = 10


def split_block_size(num_bytes: int) -> int:
    """The block size of the train/validation split rule for a stream of `num_bytes`.

    8 KiB blocks for corpora of 400 KB and more; smaller ones use about 50
    blocks (at least 256 bytes each) so that they still get a validation split.
    """
    return int(max(256, min(8192, num_bytes // 50)))


def split_train_validation(stream: np.ndarray) -> Dict[str, np.ndarray]:
    """Splits one token stream deterministically into train and validation.

    The stream is cut into blocks (`split_block_size`); block i goes to
    validation when `i % 10 == 9`, else to train. Each split keeps its
    blocks in order. Validation thus samples the whole corpus (10 %).
    """
    block = split_block_size(len(stream))
    index = np.arange(len(stream)) // block
    is_validation = (index % VALIDATION_EVERY) == VALIDATION_EVERY - 1
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

    @property
    def token_dtype(self):
        return np.uint8 if self.vocab_size <= 256 else np.int32

    def num_tokens(self, split: str) -> int:
        raise NotImplementedError

    def token_dataset(self, split: str, start: int, stop: int, input_context=None):
        """A `tf.data.Dataset` with ONE element: tokens `[start, stop)` of `split`."""
        raise NotImplementedError

    def tokens(self, split: str) -> np.ndarray:
        """The whole split as a numpy array (statistics, tests)."""
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
        from keras_dp.data.tokenizer import ByteTokenizer

        self.name = name
        self.tokenizer = tokenizer or ByteTokenizer()
        self._splits = {k: np.ascontiguousarray(np.asarray(v).reshape(-1).astype(
            self.token_dtype)) for k, v in splits.items()}

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
