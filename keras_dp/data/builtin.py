"""The builtin corpus: Python's documentation topics, shipped with CPython.

`pydoc_data.topics` holds the text `help()` shows for keywords and topics
(about 465 KB of English and code on Python 3.11). It is on every machine
with Python, so the main job trains offline with no download. The topics are
joined in name order and split by `split_train_validation` (10 % validation,
in 8 KiB blocks spread over the whole text). The text differs slightly
between Python versions.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from keras_dp.data.corpus import DOCUMENT_SEPARATOR, InMemoryCorpus, split_train_validation


def builtin_text() -> bytes:
    """The corpus as UTF-8 bytes (topics joined in sorted-name order)."""
    from pydoc_data import topics

    return DOCUMENT_SEPARATOR.join(topics.topics[name].strip().encode("utf-8")
                                   for name in sorted(topics.topics))


@functools.lru_cache(maxsize=1)
def builtin_corpus() -> InMemoryCorpus:
    """The builtin corpus with its `train` and `validation` splits (bytes)."""
    stream = np.frombuffer(builtin_text(), dtype=np.uint8)
    version = ".".join(str(v) for v in sys.version_info[:2])
    return InMemoryCorpus(f"builtin (pydoc_data.topics, Python {version})",
                          split_train_validation(stream))
