"""The builtin corpus: Python's documentation topics (`pydoc_data.topics`), offline.

The topics are joined in name order and split by `split_train_validation`; the text differs
slightly between Python versions. See docs/data_and_models.md.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from keras_dp.data.corpus import DOCUMENT_SEPARATOR, InMemoryCorpus, split_train_validation


@functools.lru_cache(maxsize=1)
def builtin_corpus() -> InMemoryCorpus:
    """The builtin corpus with its `train` and `validation` splits (bytes)."""
    from pydoc_data import topics

    text = DOCUMENT_SEPARATOR.join(topics.topics[name].strip().encode("utf-8")
                                   for name in sorted(topics.topics))
    version = ".".join(str(v) for v in sys.version_info[:2])
    return InMemoryCorpus(f"builtin (pydoc_data.topics, Python {version})",
                          split_train_validation(np.frombuffer(text, dtype=np.uint8)))
